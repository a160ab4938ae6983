// HfTokenizer's refusals and contracts: each malformed or unsupported tokenizer.json is a
// ConfigError (exit code 2) naming the file and the JSON path; invalid UTF-8 text is a
// DataError; accessors report the file; concurrent encodes agree with a single thread's.
#include <fcntl.h>
#include <unistd.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "data/hf_tokenizer_fixtures.h"
#include "sft/data/hf_tokenizer.h"
#include "sft/util/error.h"
#include "sft/util/hash.h"
#include "test_util.h"

namespace sft::data {
namespace {

using nlohmann::json;

struct BadCase {
  const char* name;
  std::function<void(json&)> edit;
  const char* path;     // the JSON path the message must name
  const char* message;  // and a piece of its explanation
};

TEST(HfTokenizerLoad, EveryUnsupportedOrMalformedFileIsAConfigErrorNamingFileAndPath) {
  const std::string sp = test::hf::byte_char(' ');
  auto set = [](const char* key, json value) { return [key, value](json& t) { t[key] = value; }; };
  auto split = [](json& t) -> json& { return t["pre_tokenizer"]["pretokenizers"][0]; };
  auto regex = [split](const char* pattern) {
    return [split, pattern](json& t) { split(t)["pattern"]["Regex"] = pattern; };
  };
  auto added = [](int id, const char* content) {
    return json{{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", true}};
  };
  const std::vector<BadCase> cases = {
      {"WordPiece", [](json& t) { t["model"]["type"] = "WordPiece"; }, "model.type",
       "\"WordPiece\" is not supported"},
      {"Unigram", [](json& t) { t["model"]["type"] = "Unigram"; }, "model.type", "not supported (only BPE)"},
      {"WordLevel", [](json& t) { t["model"]["type"] = "WordLevel"; }, "model.type", "not supported"},
      {"no model", [](json& t) { t.erase("model"); }, "model", "missing"},
      {"unknown model field", [](json& t) { t["model"]["shiny"] = 1; }, "model.shiny", "unknown field"},
      {"dropout", [](json& t) { t["model"]["dropout"] = 0.1; }, "model.dropout", "random"},
      {"subword prefix", [](json& t) { t["model"]["continuing_subword_prefix"] = "##"; },
       "model.continuing_subword_prefix", "not supported"},
      {"word suffix", [](json& t) { t["model"]["end_of_word_suffix"] = "</w>"; }, "model.end_of_word_suffix",
       "not supported"},
      {"byte_fallback", [](json& t) { t["model"]["byte_fallback"] = true; }, "model.byte_fallback",
       "not supported"},
      {"unk not in vocab", [](json& t) { t["model"]["unk_token"] = "<unk>"; }, "model.unk_token",
       "not in model.vocab"},
      {"duplicate id", [](json& t) { t["model"]["vocab"]["zz"] = 5; }, "model.vocab[", "is also the id of"},
      {"negative id", [](json& t) { t["model"]["vocab"]["zz"] = -1; }, "model.vocab[\"zz\"]",
       "outside [0, 2^24)"},
      {"huge id", [](json& t) { t["model"]["vocab"]["zz"] = 4000000000LL; }, "model.vocab[\"zz\"]",
       "outside [0, 2^24)"},
      {"float id", [](json& t) { t["model"]["vocab"]["zz"] = 3.5; }, "model.vocab[\"zz\"]",
       "expected an integer id"},
      {"merge part not in vocab",
       [](json& t) {
         t["model"]["merges"][3] = {"Q", "zz"};
       },
       "model.merges[3]", "\"zz\" is not in model.vocab"},
      {"merge result not in vocab",
       [](json& t) {
         t["model"]["merges"].push_back({"x", "y"});
       },
       "model.merges[18]", "\"xy\" is not in model.vocab"},
      {"legacy merge of three", [](json& t) { t["model"]["merges"] = {"t h e"}; }, "model.merges[0]",
       "one space"},
      {"mixed merge formats", [](json& t) { t["model"]["merges"][2] = "a n"; }, "model.merges[2]",
       "pair like the first merge"},
      {"Lowercase", set("normalizer", {{"type", "Lowercase"}}), "normalizer.type",
       "\"Lowercase\" is not supported"},
      {"NFKC in a Sequence",
       set("normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "NFKC"}}}}}),
       "normalizer.normalizers[1].type", "\"NFKC\" is not supported"},
      {"Whitespace", set("pre_tokenizer", {{"type", "Whitespace"}}), "pre_tokenizer.type",
       "\"Whitespace\" is not supported"},
      {"Metaspace in a Sequence",
       [](json& t) {
         t["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Metaspace"}};
       },
       "pre_tokenizer.pretokenizers[0].type", "\"Metaspace\" is not supported"},
      {"no ByteLevel", [](json& t) { t["pre_tokenizer"]["pretokenizers"].erase(1); }, "pre_tokenizer",
       "no ByteLevel"},
      {"null pre-tokenizer", set("pre_tokenizer", nullptr), "pre_tokenizer", "needs a ByteLevel"},
      {"ByteLevel not last",
       [](json& t) {
         auto& p = t["pre_tokenizer"]["pretokenizers"];
         std::swap(p[0], p[1]);
       },
       "pre_tokenizer.pretokenizers[1]", "must be the last"},
      {"bad behavior", [split](json& t) { split(t)["behavior"] = "Sideways"; },
       "pre_tokenizer.pretokenizers[0].behavior", "not a Split behavior"},
      {"PCRE2 refuses", regex("(?<=a+)b"), "pre_tokenizer.pretokenizers[0].pattern.Regex",
       "PCRE2 cannot compile"},
      {"unbalanced group", regex("(ab"), "pattern.Regex", "not closed"},
      {"anchor", regex("^a"), "pattern.Regex", "anchor"},
      {"\\w", regex(R"(\w+)"), "pattern.Regex", "escape \\w is not supported"},
      {"backreference", regex(R"((a)\1)"), "pattern.Regex", "escape \\1 is not supported"},
      {"other property", regex(R"(\p{Lu})"), "pattern.Regex", "only \\p{L}, \\p{N}"},
      {"class in (?i:)", regex(R"((?i:[a-z]))"), "pattern.Regex", "inside (?i:...)"},
      {"empty String",
       [split](json& t) {
         split(t)["pattern"] = {{"String", ""}};
       },
       "pattern.String", "empty"},
      {"WordPiece decoder", set("decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}),
       "decoder.type", "not supported"},
      {"null decoder", set("decoder", nullptr), "decoder", "ByteLevel decoder is required"},
      {"BertProcessing", set("post_processor", {{"type", "BertProcessing"}}), "post_processor.type",
       "\"BertProcessing\" is not supported"},
      {"template without its token",
       set("post_processor", {{"type", "TemplateProcessing"},
                              {"single",
                               {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                              {"pair", json::array()},
                              {"special_tokens", json::object()}}),
       "post_processor.single[0].SpecialToken.id", "not in post_processor.special_tokens"},
      {"added id not tokenizers'", [added](json& t) { t["added_tokens"].push_back(added(999, "<s>")); },
       "added_tokens[0].id", "differs from the id tokenizers assigns"},
      {"single_word",
       [added](json& t) {
         t["added_tokens"].push_back(added(274, "<s>"));
         t["added_tokens"][0]["single_word"] = true;
       },
       "added_tokens[0].single_word", "not supported"},
      {"added twice",
       [added](json& t) {
         t["added_tokens"] = {added(274, "<s>"), added(275, "<s>")};
       },
       "added_tokens[1].content", "twice"},
      {"truncation", set("truncation", {{"max_length", 8}}), "truncation", "must be null"},
      {"unknown top-level field", set("chat_template", "x"), "chat_template", "unknown field"},
  };
  test::TempDir d;
  const std::string file = d.file("tokenizer.json");
  // The base file loads: each refusal below comes from its one edit.
  test::write(file, test::hf::tiny_tokenizer().dump());
  ASSERT_NO_THROW(HfTokenizer::load(file));
  for (const BadCase& c : cases) {
    json t = test::hf::tiny_tokenizer();
    c.edit(t);
    test::write(file, t.dump());
    try {
      HfTokenizer::load(file);
      ADD_FAILURE() << c.name << ": loaded";
    } catch (const ConfigError& e) {
      std::string msg = e.what();
      EXPECT_EQ(e.exit_code(), 2);
      EXPECT_EQ(msg.rfind(file + ": ", 0), 0u) << c.name << ": " << msg;
      EXPECT_NE(msg.find(c.path), std::string::npos) << c.name << ": " << msg;
      EXPECT_NE(msg.find(c.message), std::string::npos) << c.name << ": " << msg;
    }
  }
}

TEST(HfTokenizerLoad, MissingMalformedAndOversizedFilesAreConfigErrors) {
  test::TempDir d;
  auto message = [](const std::string& path) {
    try {
      HfTokenizer::load(path);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no ConfigError");
  };
  EXPECT_NE(message(d.file("absent.json")).find("absent.json: tokenizer.json not found"), std::string::npos);
  test::write(d.file("empty.json"), "");
  EXPECT_NE(message(d.file("empty.json")).find("empty.json: not valid JSON"), std::string::npos);
  test::write(d.file("cut.json"), test::hf::tiny_tokenizer().dump().substr(0, 500));
  EXPECT_NE(message(d.file("cut.json")).find("cut.json: not valid JSON"), std::string::npos);
  test::write(d.file("array.json"), "[1, 2]");
  EXPECT_NE(message(d.file("array.json")).find("expected a JSON object"), std::string::npos);
  test::write(d.file("bad_utf8.json"), "{\"model\": \"\xC3\x28\"}");
  EXPECT_NE(message(d.file("bad_utf8.json")).find("not valid JSON"), std::string::npos);
  // A sparse file just over the bound: refused from its size, unread.
  const std::string big = d.file("big.json");
  int fd = ::open(big.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(HfTokenizer::kMaxFileBytes + 1)), 0);
  ::close(fd);
  EXPECT_NE(message(big).find("big.json: 268435457 bytes; tokenizer.json files above 256 MiB are refused"),
            std::string::npos)
      << message(big);
}

TEST(HfTokenizerLoad, InvalidUtf8TextIsADataErrorNamingTheByte) {
  test::TempDir d;
  test::write(d.file("t.json"), test::hf::tiny_tokenizer().dump());
  auto t = HfTokenizer::load(d.file("t.json"));
  for (const std::string& bad : {std::string("ab\xFF"), std::string("ab\xC3"), std::string("ab\xED\xA0\x80"),
                                 std::string("ab\xC0\xAF"), std::string("ab\xF4\x90\x80\x80")}) {
    try {
      t->encode(bad);
      ADD_FAILURE() << "encoded invalid UTF-8";
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find("not valid UTF-8 at byte 2"), std::string::npos) << e.what();
      EXPECT_EQ(e.exit_code(), 2);
    }
  }
  // Bytes that decode to invalid UTF-8 become U+FFFD, one per maximal invalid subpart (Rust's
  // from_utf8_lossy, as tokenizers decodes).
  auto id = [&](unsigned char b) { return *t->token_id(test::hf::byte_char(b)); };
  EXPECT_EQ(t->decode({id(0xE4), id(0xB8), id('a'), id(0xFF), id(0xC3)}), "\uFFFDa\uFFFD\uFFFD");
  EXPECT_EQ(t->decode({id('a'), -5, 1 << 20, id('b')}), "ab");  // ids of no token are skipped
}

TEST(HfTokenizerLoad, AccessorsReportTheFile) {
  test::TempDir d;
  json j = test::hf::tiny_tokenizer();
  const int next = j["model"]["vocab"].size();
  j["added_tokens"] = {{{"id", next},
                        {"content", "<s>"},
                        {"single_word", false},
                        {"lstrip", false},
                        {"rstrip", false},
                        {"normalized", false},
                        {"special", true}},
                       {{"id", next + 1},
                        {"content", "<x>"},
                        {"single_word", false},
                        {"lstrip", false},
                        {"rstrip", false},
                        {"normalized", true},
                        {"special", false}}};
  const std::string path = d.file("t.json"), text = j.dump();
  test::write(path, text);
  auto t = HfTokenizer::load(path);
  EXPECT_EQ(t->path(), path);
  EXPECT_EQ(t->sha256(), sha256_hex(text));
  EXPECT_EQ(t->vocab_size(), next + 2);
  EXPECT_EQ(t->bos_id(), std::nullopt);  // the ByteLevel post-processor adds nothing
  EXPECT_EQ(t->token_id("<s>"), next);
  EXPECT_EQ(t->token_id("\u0120the"), test::hf::tiny_id(j, "\u0120the"));
  EXPECT_EQ(t->token_id("absent"), std::nullopt);
  EXPECT_EQ(t->token(next + 1), "<x>");
  EXPECT_EQ(t->token(-1), "");
  EXPECT_EQ(t->token(next + 2), "");
  EXPECT_TRUE(t->is_special(next));
  EXPECT_FALSE(t->is_special(next + 1));
  EXPECT_EQ(t->encode(" the<s>the"), (std::vector<std::int32_t>{test::hf::tiny_id(j, "\u0120the"), next,
                                                                test::hf::tiny_id(j, "the")}));
  EXPECT_EQ(t->decode(t->encode("a<s>b<x>"), /*skip_special=*/true), "ab<x>");
}

TEST(HfTokenizerLoad, ConcurrentEncodesEqualOneThreads) {
  test::TempDir d;
  test::write(d.file("t.json"), test::hf::tiny_tokenizer().dump());
  auto t = HfTokenizer::load(d.file("t.json"));
  auto texts = test::hf::hostile_corpus({"<|im_start|>"});
  std::vector<std::vector<std::int32_t>> expected;
  for (const auto& s : texts) expected.push_back(t->encode(s));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 20; ++rep)
        for (std::size_t i = (k * 7) % texts.size(), n = 0; n < texts.size(); ++n, i = (i + 1) % texts.size())
          if (t->encode(texts[i]) != expected[i]) ++mismatches[k];
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

}  // namespace
}  // namespace sft::data
