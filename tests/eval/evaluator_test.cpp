// The evaluator end to end with a tiny model: the three synthetic skills from one command
// into results.json, the API the trainer calls, and usage errors.
#include "sft/eval/evaluator.h"
#include "sft/eval/sandbox.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "sft/data/tokenizer.h"
#include "sft/model/llama.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft::eval {
namespace {

// The random tiny model every test here evaluates.
constexpr std::uint64_t kSeed = 11;

TEST(EvalSyntheticSkills, OneCommandWritesResultsWithTheThreeScores) {
  std::string why;  // the code skill runs generated programs, only ever in the sandbox
  if (!sandbox_available(&why)) GTEST_SKIP() << "sandbox unavailable here: " << why;
  test::TempDir d;
  const std::string model = test::save_tiny_llama(kSeed, d.file("model"));
  auto r = test::run_sft(
      {"eval", "--model", model, "--benchmark", "math,code,general", "--limit", "6", "--max-new-tokens", "12",
       "--batch-size", "16", "--out", d.file("results.json"), "--threads", "2"},
      {}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("math: accuracy"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("code: pass@1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("general: exact match"), std::string::npos) << r.out;
  auto j = nlohmann::json::parse(test::read(d.file("results.json")));
  EXPECT_EQ(j["benchmark"], "math,code,general");
  EXPECT_EQ(j["model"], model);
  const std::map<std::string, std::string> metric = {
      {"math", "accuracy"}, {"code", "pass@1"}, {"general", "exact_match"}};
  for (const auto& [b, m] : metric) {
    ASSERT_TRUE(j["summary"].contains(b)) << b;
    EXPECT_EQ(j["summary"][b]["metric"], m);
    const double v = j["summary"][b]["score"].get<double>();
    EXPECT_GE(v, 0.0) << b;
    EXPECT_LE(v, 1.0) << b;
    EXPECT_TRUE(j["data"][b].get<std::string>().find("data/tiny/") != std::string::npos) << j["data"][b];
    EXPECT_FALSE(j["samples"][b].empty()) << b;
  }
  EXPECT_EQ(j["samples"]["math"].size(), 6u);
  EXPECT_EQ(j["samples"]["code"].size(), 6u);
  EXPECT_EQ(j["summary"]["general"]["conversations"], 6);
  EXPECT_GE(j["summary"]["general"]["turns"].get<int>(), 6);
  for (const char* k : {"task_id", "generated", "completion", "result", "passed"})
    EXPECT_TRUE(j["samples"]["code"][0].contains(k)) << k;
}

TEST(EvalApi, RunBenchmarkReturnsSummaryAndSamplesForTheTrainer) {
  auto m = test::tiny_llama(kSeed);
  auto tok = data::Tokenizer::load(test::tiny("tokenizer.model"));
  EvalRequest req;
  req.benchmark = "general";
  req.data = test::tiny("general_test.json");
  req.limit = 3;
  req.max_new_tokens = 8;
  req.model_name = "random";
  auto r = run_benchmark(*m, *tok, req);
  std::vector<std::string> keys;
  for (auto it = r.begin(); it != r.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"benchmark", "model", "data", "settings", "summary", "samples"}));
  EXPECT_EQ(r["benchmark"], "general");
  EXPECT_EQ(r["model"], "random");
  EXPECT_EQ(r["summary"]["metric"], "exact_match");
  EXPECT_EQ(r["summary"]["conversations"], 3);
  EXPECT_EQ(r["samples"].size(), r["summary"]["turns"]);
  EXPECT_EQ(r["settings"]["template"], "vicuna_v1.1");
  for (const char* k : {"id", "turn", "prompt", "reference", "prediction", "correct"})
    EXPECT_TRUE(r["samples"][0].contains(k)) << k;
  EXPECT_FALSE(summary_line(r).empty());

  // The same greedy generation twice gives the same answers.
  req.benchmark = "math";
  req.data = "";  // the shipped default, found from the working folder or beside the binary
  auto a = run_benchmark(*m, *tok, req), b = run_benchmark(*m, *tok, req);
  ASSERT_EQ(a["samples"].size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(a["samples"][i]["prediction"], b["samples"][i]["prediction"]);

  req.benchmark = "gsm8k";
  EXPECT_THROW(run_benchmark(*m, *tok, req), ConfigError);  // no shipped GSM8K: --data is required
  req.benchmark = "squad";
  EXPECT_THROW(run_benchmark(*m, *tok, req), ConfigError);
}

// Little memory shrinks the batches instead of failing: a budget that holds one row at a time
// gives the answers batches of one give.
TEST(EvalApi, BatchesShrinkToTheMemoryBudgetAndGiveTheSameAnswers) {
  auto m = test::tiny_llama(kSeed);
  auto tok = data::Tokenizer::load(test::tiny("tokenizer.model"));
  EvalRequest req;
  req.benchmark = "math";
  req.limit = 6;
  req.max_new_tokens = 8;
  req.batch_size = 1;
  auto ones = run_benchmark(*m, *tok, req);
  req.batch_size = 6;
  req.memory_budget_bytes = 1;  // less than one row: every batch shrinks to one prompt
  auto tight = run_benchmark(*m, *tok, req);
  ASSERT_EQ(tight["samples"].size(), 6u);
  for (std::size_t i = 0; i < 6; ++i)
    EXPECT_EQ(tight["samples"][i]["prediction"], ones["samples"][i]["prediction"]) << i;
  req.memory_budget_bytes = 0;  // measured: plenty here
  EXPECT_EQ(run_benchmark(*m, *tok, req)["summary"]["score"], ones["summary"]["score"]);
}

TEST(EvalCli, UsageErrorsExitWithCodeTwo) {
  test::TempDir d;
  test::write(d.file("p.jsonl"), "{\"prediction\": \"1\"}\n");
  const std::vector<std::vector<std::string>> bad = {
      {"eval", "--benchmark", "gsm8k", "--model", d.path()},                 // gsm8k needs --data
      {"eval", "--benchmark", "squad", "--predictions", d.file("p.jsonl")},  // unknown benchmark
      {"eval", "--benchmark", "code", "--predictions", d.file("p.jsonl")},   // predictions score gsm8k/math
      {"eval", "--benchmark", "math", "--model", d.path(), "--predictions", d.file("p.jsonl")},
      {"eval", "--benchmark", "math"},  // nothing to evaluate
      {"eval", "--benchmark", "math,code", "--data", d.file("p.jsonl"), "--model", d.path()},
  };
  for (const auto& args : bad) {
    auto r = test::run_sft(args, {}, 60);
    std::string cmd;
    for (const auto& a : args) cmd += a + " ";
    EXPECT_EQ(r.exit_code, 2) << cmd << "\n" << r.err;
    EXPECT_NE(r.err.find("sft: error:"), std::string::npos) << cmd << "\n" << r.err;
  }
  // A malformed predictions file is bad input too (exit 2), naming file:line.
  test::write(d.file("bad.jsonl"), "{\"prediction\": \"1\"}\nnot json\n");
  auto r = test::run_sft({"eval", "--benchmark", "math", "--predictions", d.file("bad.jsonl")}, {}, 60);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("bad.jsonl:2: malformed JSON"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace sft::eval
