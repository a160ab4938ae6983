// Evaluation from the trainer: a tiny model trained with the config's eval block gets the
// three synthetic scores at the end of training (written by the trainer's eval hook, which
// calls eval::run_benchmark).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "sft/eval/sandbox.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft::eval {
namespace {

TEST(EvalDuringTraining, ATinyTrainedModelGetsTheThreeSyntheticScores) {
  std::string why;  // the code skill runs generated programs, only ever in the sandbox
  if (!sandbox_available(&why)) GTEST_SKIP() << "sandbox unavailable here: " << why;
  test::TempDir d;
  auto r = test::run_sft(
      test::train_args(
          d.file("run"), d.file("cache"),
          {"datasets.math.fraction=1/64", "datasets.code.fraction=1/64", "datasets.general.fraction=1/32",
           "eval.at_end=true", "eval.max_new_tokens=48", "eval.batch_size=32",
           "eval.benchmarks=[{name: math, limit: 12}, {name: code, limit: 12}, {name: general, limit: 12}]"}),
      {}, 900);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto s = nlohmann::json::parse(test::read(d.file("run/eval/summary.json")));
  // The trainer's scores are `sft eval`'s on the exported model with the same settings.
  for (const char* b : {"math", "code", "general"}) {
    ASSERT_TRUE(s.contains(b)) << b;
    auto e = test::run_sft({"eval", "--model", d.file("run/final"), "--benchmark", b, "--limit", "12",
                            "--max-new-tokens", "48", "--batch-size", "32", "--json"},
                           {}, 600);
    ASSERT_EQ(e.exit_code, 0) << e.err;
    auto standalone = nlohmann::json::parse(e.out)["summary"];
    EXPECT_EQ(s[b]["score"].get<double>(), standalone["score"].get<double>())
        << b << ": " << standalone.dump();
  }
  EXPECT_EQ(s["math"]["metric"], "accuracy");
  EXPECT_EQ(s["code"]["metric"], "pass@1");
  EXPECT_EQ(s["general"]["metric"], "exact_match");
  for (const char* b : {"math", "code", "general"})
    EXPECT_TRUE(fs::exists(d.file(std::string("run/eval/") + b + ".json")));
  EXPECT_NE(test::read(d.file("run/metrics.jsonl")).find("\"event\":\"eval\""), std::string::npos);
}

}  // namespace
}  // namespace sft::eval
