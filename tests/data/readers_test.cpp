// Dataset readers: the bad-input corpus under tests/fixtures/bad_data, each file with the
// exact error it must produce, and on_bad_record: skip counting instead of failing.
#include "sft/data/readers.h"

#include <gtest/gtest.h>

#include <tuple>

#include "sft/util/error.h"
#include "test_util.h"

namespace sft::data {
namespace {

config::DatasetSpec spec_for(const std::string& file, const std::string& format) {
  config::DatasetSpec s;
  s.name = "bad";
  s.path = test::source_dir() + "/tests/fixtures/bad_data/" + file;
  s.format = *config::parse_choice<config::Format>(format);
  return s;
}

struct BadCase {
  const char* file;
  const char* format;
  const char* error;  // expected, after "<path>"
};

const BadCase kBad[] = {
    {"gsm8k_malformed_line.jsonl", "gsm8k", ":2: malformed JSON: "},
    {"gsm8k_missing_answer.jsonl", "gsm8k",
     ":3: missing field \"answer\"; expected \"question\" and \"answer\""},
    {"gsm8k_wrong_type.jsonl", "gsm8k", ":1: field \"answer\" must be a string, got number"},
    {"gsm8k_no_final_answer.jsonl", "gsm8k", ":2: \"answer\" has no final \"#### <number>\" line"},
    {"empty.jsonl", "gsm8k", ": empty file"},
    {"whitespace_only.json", "alpaca", ": empty file"},
    {"alpaca_truncated_array.json", "alpaca",
     ":3: malformed JSON: the file ends inside the top-level array (truncated?)"},
    {"alpaca_missing_output.json", "alpaca", ":3: missing field \"output\""},
    {"alpaca_empty_instruction.json", "alpaca", ":2: empty \"instruction\""},
    {"alpaca_trailing_comma.json", "alpaca", ":3: malformed JSON: trailing comma before ']'"},
    {"sharegpt_not_alternating.json", "sharegpt", ":2: turn 2: expected a user turn, got assistant"},
    {"sharegpt_empty_conversation.json", "sharegpt", ":2: empty conversation"},
    {"sharegpt_unknown_from.json", "sharegpt", ":2: turn 1: unknown \"from\": \"bot\""},
    {"sharegpt_system_late.json", "sharegpt", ":2: turn 1: a system message is only allowed first"},
    {"sharegpt_starts_with_gpt.json", "sharegpt", ":2: turn 0: expected a user turn, got assistant"},
    {"sharegpt_missing_conversations.json", "sharegpt", ":2: missing field \"conversations\""},
    {"messages_bad_role.jsonl", "messages", ":1: message 1: unknown role \"tool\""},
    {"messages_content_null.jsonl", "messages", ":1: field \"content\" must be a string, got null"},
    {"invalid_utf8.jsonl", "gsm8k", ":2: malformed JSON: "},
    {"not_object.jsonl", "gsm8k", ":2: expected a JSON object, got a list"},
    {"garbage.json", "alpaca",
     ":1: malformed JSON: expected a JSON array '[...]' or one JSON object per line"},
    {"text_empty.jsonl", "text", ":2: empty text"},
    {"invalid_utf8.txt", "text", ":3: invalid UTF-8"},
    {"mtbench_turns_not_list.jsonl", "mtbench", ":1: \"turns\" must be a non-empty list of strings"},
};

TEST(Readers, EveryBadInputFileGetsItsExactError) {
  for (const auto& c : kBad) {
    auto spec = spec_for(c.file, c.format);
    try {
      read_dataset(spec, config::OnBadRecord::kError);
      ADD_FAILURE() << c.file << ": no error";
    } catch (const DataError& e) {
      std::string want = spec.path + c.error;
      EXPECT_EQ(std::string(e.what()).rfind(want, 0), 0u)
          << c.file << "\n  got:  " << e.what() << "\n  want: " << want;
    }
  }
}

TEST(Readers, InvalidUtf8IsNamedAsSuch) {
  try {
    read_dataset(spec_for("invalid_utf8.jsonl", "gsm8k"), config::OnBadRecord::kError);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("UTF-8"), std::string::npos) << e.what();
  }
}

TEST(Readers, MissingFileIsNamed) {
  auto spec = spec_for("no_such_file.jsonl", "gsm8k");
  try {
    read_dataset(spec, config::OnBadRecord::kError);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_EQ(std::string(e.what()), spec.path + ": dataset file not found (datasets.bad.path)");
  }
}

TEST(Readers, SkipCountsBadRecordsAndKeepsTheGoodOnes) {
  ReadResult r = read_dataset(spec_for("gsm8k_missing_answer.jsonl", "gsm8k"), config::OnBadRecord::kSkip);
  EXPECT_EQ(r.read, 3);
  EXPECT_EQ(r.records.size(), 2u);
  ASSERT_EQ(r.bad.size(), 1u);
  EXPECT_NE(r.bad[0].where.find("gsm8k_missing_answer.jsonl:3"), std::string::npos);
  ReadResult m = read_dataset(spec_for("gsm8k_malformed_line.jsonl", "gsm8k"), config::OnBadRecord::kSkip);
  EXPECT_EQ(m.records.size(), 2u);
  EXPECT_EQ(m.bad.size(), 1u);
  // A whole-file problem is fatal even when skipping.
  EXPECT_THROW(read_dataset(spec_for("alpaca_truncated_array.json", "alpaca"), config::OnBadRecord::kSkip),
               DataError);
}

TEST(Readers, RecordsKeepTheirOrigin) {
  config::DatasetSpec s;
  s.name = "general";
  s.path = test::tiny("general_train.json");
  s.format = config::Format::kSharegpt;
  ReadResult r = read_dataset(s, config::OnBadRecord::kError);
  ASSERT_GT(r.records.size(), 2u);
  EXPECT_EQ(r.records[0].origin.line, 2);
  EXPECT_EQ(r.records[0].origin.index, 0);
  EXPECT_EQ(r.records[0].origin.id, "tiny_general_200");
  EXPECT_EQ(r.records[1].origin.index, 1);
  EXPECT_GT(r.records[1].origin.line, 2);
  s.path = test::tiny("math_train.jsonl");
  s.format = config::Format::kGsm8k;
  s.name = "math";
  ReadResult m = read_dataset(s, config::OnBadRecord::kError);
  EXPECT_EQ(m.records[5].origin.line, 6);
  EXPECT_EQ(m.records[5].origin.id, "math:5");
}

TEST(Readers, GsmCalculatorAnnotationsCanBeStripped) {
  EXPECT_EQ(strip_calculator_annotations("He has 48/2 = <<48/2=24>>24 clips.\n#### 24"),
            "He has 48/2 = 24 clips.\n#### 24");
  EXPECT_EQ(strip_calculator_annotations("unclosed << stays"), "unclosed << stays");
}

TEST(Readers, SharegptTrailingUserTurnIsDroppedAndCounted) {
  test::TempDir d;
  test::write(d.file("c.json"),
              R"([{"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q"},
     {"from": "gpt", "value": "a"}, {"from": "human", "value": "unanswered"}]}])");
  config::DatasetSpec s;
  s.name = "c";
  s.path = d.file("c.json");
  s.format = config::Format::kSharegpt;
  ReadResult r = read_dataset(s, config::OnBadRecord::kError);
  ASSERT_EQ(r.records.size(), 1u);
  EXPECT_EQ(r.records[0].turns.size(), 2u);
  EXPECT_TRUE(r.records[0].has_system);
  EXPECT_EQ(r.records[0].system, "S");
  EXPECT_EQ(r.trailing_user_turns, 1);
}

TEST(Readers, UnansweredLastUserTurnIsKeptOnlyWhenAsked) {
  test::TempDir d;
  test::write(d.file("c.json"),
              R"([{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"},
     {"from": "human", "value": "unanswered"}]}, {"conversations": [{"from": "human", "value": "alone"}]}])");
  config::DatasetSpec s;
  s.name = "c";
  s.path = d.file("c.json");
  s.format = config::Format::kSharegpt;
  ReadResult kept = read_dataset(s, config::OnBadRecord::kError, /*keep_unanswered=*/true);
  ASSERT_EQ(kept.records.size(), 2u);
  ASSERT_EQ(kept.records[0].turns.size(), 3u);
  EXPECT_EQ(kept.records[0].turns[2].role, Role::kUser);
  EXPECT_EQ(kept.records[0].turns[2].content, "unanswered");
  ASSERT_EQ(kept.records[1].turns.size(), 1u);
  EXPECT_EQ(kept.records[1].turns[0].content, "alone");
  EXPECT_EQ(kept.trailing_user_turns, 0);
  // For training the same file drops the turn and refuses the conversation left with none.
  ReadResult dropped = read_dataset(s, config::OnBadRecord::kSkip);
  ASSERT_EQ(dropped.records.size(), 1u);
  EXPECT_EQ(dropped.records[0].turns.size(), 2u);
  ASSERT_EQ(dropped.bad.size(), 1u);
  EXPECT_NE(dropped.bad[0].reason.find("no assistant answer"), std::string::npos);
}

TEST(Readers, MessagesFilterKeepsMatchingRecordsOnly) {
  test::TempDir d;
  test::write(d.file("m.jsonl"),
              "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", "
              "\"content\": \"a\"}], \"label\": true}\n"
              "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", "
              "\"content\": \"b\"}], \"label\": false}\n");
  config::DatasetSpec s;
  s.name = "m";
  s.path = d.file("m.jsonl");
  s.format = config::Format::kMessages;
  s.filter_field = "label";
  s.filter_equals = true;
  ReadResult r = read_dataset(s, config::OnBadRecord::kError);
  EXPECT_EQ(r.read, 2);
  EXPECT_EQ(r.filtered, 1);
  ASSERT_EQ(r.records.size(), 1u);
  EXPECT_EQ(r.records[0].turns[1].content, "a");
}

TEST(Readers, TextFilesSplitIntoBlankLineSeparatedDocuments) {
  test::TempDir d;
  test::write(d.file("c.txt"), "doc one\nline two\n\n\ndoc two\n");
  config::DatasetSpec s;
  s.name = "t";
  s.path = d.file("c.txt");
  s.format = config::Format::kText;
  ReadResult r = read_dataset(s, config::OnBadRecord::kError);
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_EQ(r.records[0].text, "doc one\nline two");
  EXPECT_EQ(r.records[1].origin.line, 5);
}

// A corpus saved with Windows line ends trains on the same text as the LF one: no '\r'.
TEST(Readers, CrlfTextFilesGiveTheSameDocumentsAsLfOnes) {
  test::TempDir d;
  test::write(d.file("lf.txt"), "doc one\nline two\n\n\ndoc two\n");
  test::write(d.file("crlf.txt"), "doc one\r\nline two\r\n\r\n\r\ndoc two\r\n");
  config::DatasetSpec s;
  s.name = "t";
  s.format = config::Format::kText;
  s.path = d.file("lf.txt");
  ReadResult lf = read_dataset(s, config::OnBadRecord::kError);
  s.path = d.file("crlf.txt");
  ReadResult crlf = read_dataset(s, config::OnBadRecord::kError);
  ASSERT_EQ(crlf.records.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(crlf.records[i].text, lf.records[i].text) << i;
    EXPECT_EQ(crlf.records[i].text.find('\r'), std::string::npos) << i;
    EXPECT_EQ(crlf.records[i].origin.line, lf.records[i].origin.line) << i;
  }
}

// `sft config keys` lists .gz datasets: a gzip-compressed file reads as its plain twin, JSON
// lines and .txt documents alike; a folder or FIFO is refused (it would block or never end).
TEST(Readers, GzipCompressedDatasetsReadAsTheirPlainText) {
  test::TempDir d;
  test::write(d.file("m.jsonl"),
              "{\"question\": \"1+1?\", \"answer\": \"2\\n#### 2\"}\n"
              "{\"question\": \"2+2?\", \"answer\": \"4\\n#### 4\"}\n");
  test::write(d.file("t.txt"), "first doc\n\nsecond doc\n");
  ASSERT_EQ(test::run_program({"gzip", "-n", "-k", d.file("m.jsonl"), d.file("t.txt")}).exit_code, 0);
  for (const auto& [file, format, n] : {std::tuple{"m.jsonl", "gsm8k", 2}, std::tuple{"t.txt", "text", 2}}) {
    config::DatasetSpec plain;
    plain.name = "x";
    plain.path = d.file(file);
    plain.format = *config::parse_choice<config::Format>(format);
    config::DatasetSpec gz = plain;
    gz.path += ".gz";
    const auto a = read_dataset(plain, config::OnBadRecord::kError),
               b = read_dataset(gz, config::OnBadRecord::kError);
    ASSERT_EQ(b.records.size(), static_cast<std::size_t>(n)) << file;
    EXPECT_EQ(a.records.size(), b.records.size()) << file;
  }
  config::DatasetSpec dir;
  dir.name = "x";
  dir.path = d.path();
  dir.format = config::Format::kGsm8k;
  EXPECT_THROW(read_dataset(dir, config::OnBadRecord::kError), DataError);
}

}  // namespace
}  // namespace sft::data
