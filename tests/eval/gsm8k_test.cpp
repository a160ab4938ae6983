// GSM8K scoring: answer extraction edge cases, predictions files aligned by order or idx,
// and the real test set scored against its own gold answers (100%) and shuffled ones (~0%).
#include "sft/eval/gsm8k.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "sft/eval/evaluator.h"
#include "sft/util/error.h"
#include "sft/util/rng.h"
#include "test_util.h"

namespace sft::eval {
namespace {

std::optional<double> pred(const std::string& s) { return gsm8k_predicted_answer(s); }

TEST(Gsm8kExtraction, ReadsNumbersTheWayTheCommunityDoes) {
  EXPECT_EQ(pred("So she has 72 clips.\n#### 72"), 72.0);
  EXPECT_EQ(pred("It costs $1,234.50 in total."), 1234.5);
  EXPECT_EQ(pred("He has 18 dollars."), 18.0);
  EXPECT_EQ(pred("The answer is 5."), 5.0);  // a sentence's period is not a decimal point
  EXPECT_EQ(pred("#### -5"), -5.0);
  EXPECT_EQ(pred("She loses -$3 a day"), -3.0);
  EXPECT_EQ(pred("8-3 = 5"), 5.0);  // a minus between numbers is not a sign
  // U+2212, the typographic minus, is a sign as '-' is (issue 33: its sign was dropped).
  EXPECT_EQ(pred("#### \u22125"), -5.0);
  EXPECT_EQ(pred("She loses \u2212$3 a day"), -3.0);
  EXPECT_EQ(pred("a change of $\u22127.5"), -7.5);
  EXPECT_EQ(pred("8\u22123 = 5"), 5.0);
  EXPECT_EQ(pred("8\u22123"), 3.0);
  EXPECT_EQ(gsm8k_reference_answer("x\n#### \u221212"), -12.0);
  EXPECT_EQ(pred("half of it is .5"), 0.5);
  EXPECT_EQ(pred("50% of them"), 50.0);
  EXPECT_EQ(pred("1,000,000 people"), 1000000.0);
  EXPECT_EQ(pred("scores 1,2345"), 2345.0);      // not a thousands separator: two numbers
  EXPECT_EQ(pred("<<3*4=12>>12 apples"), 12.0);  // calculator annotations keep the result last
  EXPECT_FALSE(pred("no idea").has_value());
  EXPECT_FALSE(pred("").has_value());
}

TEST(Gsm8kExtraction, TheHashAnswerWinsOverLaterNumbers) {
  EXPECT_EQ(pred("Step 1: 3 + 4 = 7\n#### 7\nIs there anything else? 42"), 7.0);
  EXPECT_EQ(pred("#### 1,000 apples\nthen 3"), 1000.0);
  EXPECT_EQ(pred("#### none\nso 9"), 9.0);  // no number after ####: the last number
}

TEST(Gsm8kExtraction, ReferencesUseTheLastHashLine) {
  EXPECT_EQ(gsm8k_reference_answer("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72"), 72.0);
  EXPECT_EQ(gsm8k_reference_answer("x\n#### 1,600"), 1600.0);
  EXPECT_FALSE(gsm8k_reference_answer("no final line 5").has_value());
}

TEST(Gsm8kExtraction, AnswersMatchNumerically) {
  EXPECT_TRUE(gsm8k_match(18.0, 18.0));
  EXPECT_TRUE(gsm8k_match(pred("18.00 dollars"), gsm8k_reference_answer("#### 18")));
  EXPECT_FALSE(gsm8k_match(17.0, 18.0));
  EXPECT_FALSE(gsm8k_match(std::nullopt, 18.0));
  EXPECT_FALSE(gsm8k_match(18.0, std::nullopt));
}

TEST(Gsm8kPredictions, AlignByOrderOrByIdxAndRejectMisalignedFiles) {
  test::TempDir d;
  test::write(
      d.file("ref.jsonl"),
      "{\"question\": \"q0\", \"answer\": \"#### 1\"}\n{\"question\": \"q1\", \"answer\": \"#### 2\"}\n"
      "{\"question\": \"q2\", \"answer\": \"#### 3\"}\n");
  auto items = load_gsm8k(d.file("ref.jsonl"));
  ASSERT_EQ(items.size(), 3u);
  test::write(d.file("order.jsonl"),
              "{\"prediction\": \"1\"}\n{\"prediction\": \"x 5\"}\n\n{\"prediction\": \"#### 3\"}\n");
  EXPECT_EQ(load_gsm8k_predictions(d.file("order.jsonl"), items),
            (std::vector<std::string>{"1", "x 5", "#### 3"}));
  test::write(
      d.file("idx.jsonl"),
      "{\"idx\": 2, \"prediction\": \"c\"}\n{\"idx\": 0, \"prediction\": \"a\", \"question\": \" q0 \"}\n"
      "{\"idx\": 1, \"prediction\": \"b\"}\n");
  EXPECT_EQ(load_gsm8k_predictions(d.file("idx.jsonl"), items), (std::vector<std::string>{"a", "b", "c"}));
  // The first two references only (--limit 2): the third prediction is left out.
  EXPECT_EQ(load_gsm8k_predictions(d.file("idx.jsonl"), load_gsm8k(d.file("ref.jsonl"), 2), 3).size(), 2u);
  EXPECT_EQ(load_gsm8k_predictions(d.file("order.jsonl"), load_gsm8k(d.file("ref.jsonl"), 2), 3).size(), 2u);
  // A line past the reference file's end is another file's, not one to leave out.
  test::write(d.file("extra.jsonl"),
              "{\"prediction\": \"1\"}\n{\"prediction\": \"2\"}\n{\"prediction\": \"3\"}\n"
              "{\"prediction\": \"4\"}\n");
  EXPECT_THROW(load_gsm8k_predictions(d.file("extra.jsonl"), items), DataError);
  EXPECT_THROW(load_gsm8k_predictions(d.file("extra.jsonl"), load_gsm8k(d.file("ref.jsonl"), 2), 3),
               DataError);

  test::write(d.file("wrong_q.jsonl"), "{\"prediction\": \"1\", \"question\": \"q1\"}\n");
  EXPECT_THROW(load_gsm8k_predictions(d.file("wrong_q.jsonl"), items), DataError);
  test::write(d.file("short.jsonl"), "{\"prediction\": \"1\"}\n");
  try {
    load_gsm8k_predictions(d.file("short.jsonl"), items);
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("2 of 3 references have no prediction"), std::string::npos)
        << e.what();
  }
  test::write(d.file("dup.jsonl"),
              "{\"idx\": 0, \"prediction\": \"1\"}\n{\"idx\": 0, \"prediction\": \"1\"}\n");
  EXPECT_THROW(load_gsm8k_predictions(d.file("dup.jsonl"), items), DataError);
  test::write(d.file("bad.jsonl"), "{\"output\": \"1\"}\n");
  EXPECT_THROW(load_gsm8k_predictions(d.file("bad.jsonl"), items), DataError);

  auto r = score_gsm8k(items, {"#### 1", "2.0", "nothing"});
  EXPECT_EQ(r["summary"]["correct"], 2);
  EXPECT_EQ(r["summary"]["no_answer"], 1);
  EXPECT_NEAR(r["summary"]["accuracy"].get<double>(), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(r["samples"][1]["extracted"], 2.0);
  EXPECT_TRUE(r["samples"][2]["extracted"].is_null());
  EXPECT_EQ(r["samples"][0]["prediction"], "#### 1");
}

TEST(Gsm8kRealData, GoldAnswersScoreFullMarksAndShuffledOnesAlmostNothing) {
  SFT_REQUIRE_SHARED_DATA();
  const std::string ref = test::shared_data() + "/gsm8k/test.jsonl";
  const auto items = load_gsm8k(ref);
  ASSERT_EQ(items.size(), 1319u);
  test::TempDir d;
  std::string gold, shuffled;
  auto perm = permutation(static_cast<std::int64_t>(items.size()), 7);
  for (std::size_t i = 0; i < items.size(); ++i) {
    gold += nlohmann::json{{"question", items[i].question}, {"prediction", items[i].answer}}.dump() + "\n";
    shuffled +=
        nlohmann::json{{"idx", i}, {"prediction", items[static_cast<std::size_t>(perm[i])].answer}}.dump() +
        "\n";
  }
  test::write(d.file("gold.jsonl"), gold);
  test::write(d.file("shuffled.jsonl"), shuffled);

  auto g = score_gsm8k_predictions(d.file("gold.jsonl"), ref);
  EXPECT_EQ(g["summary"]["correct"], 1319);
  EXPECT_DOUBLE_EQ(g["summary"]["accuracy"].get<double>(), 1.0);
  EXPECT_LT(score_gsm8k_predictions(d.file("shuffled.jsonl"), ref)["summary"]["accuracy"].get<double>(),
            0.05);

  // The same through the command line, which writes results.json.
  auto r = test::run_sft({"eval", "--benchmark", "gsm8k", "--predictions", d.file("gold.jsonl"), "--data",
                          ref, "--out", d.file("out/results.json")},
                         {}, 120);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("gsm8k: accuracy 1.0000 (1319/1319)"), std::string::npos) << r.out;
  auto j = nlohmann::json::parse(test::read(d.file("out/results.json")));
  for (const char* k : {"benchmark", "model", "data", "summary", "samples"}) EXPECT_TRUE(j.contains(k)) << k;
  ASSERT_EQ(j["samples"].size(), 1319u);
  for (const char* k : {"idx", "question", "reference", "prediction", "extracted", "correct"})
    EXPECT_TRUE(j["samples"][5].contains(k)) << k;
  r = test::run_sft({"eval", "--benchmark", "gsm8k", "--predictions", d.file("shuffled.jsonl"), "--data", ref,
                     "--limit", "100"},
                    {}, 120);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("/100)"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace sft::eval
