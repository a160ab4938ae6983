// TensorBoard's own event reader (EventAccumulator) reads back every scalar a short real
// `sft train` logged: each train/* value of every step line and each eval/* score of
// metrics.jsonl, at the same step, equal at float32, and nothing else
// (tests/clients/tensorboard_read.py).
#include <gtest/gtest.h>

#include <cstdint>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace sft {
namespace {

TEST(TensorBoardClient, ItsEventReaderReadsEveryScalarSftLogged) {
  SFT_REQUIRE_PYTHON();
  test::TempDir d;
  // Both stages of the tiny DMT run on a sliver of the data, one thread (quick on a busy
  // machine), every step logged, and the math and general skills evaluated at the stage end
  // and at the end (eval/* scalars).
  auto r = test::run_sft(
      test::train_args(
          d.file("run"), d.file("cache"),
          {"datasets.math.fraction=1/256", "datasets.code.fraction=1/256", "datasets.general.fraction=1/128",
           "strategy.k=1/8", "train.batch_size=2", "train.threads=1", "train.log_every=1",
           "eval.at_stage_end=true", "eval.at_end=true", "eval.max_new_tokens=8", "eval.batch_size=4",
           "eval.benchmarks=[{name: math, limit: 2}, {name: general, limit: 2}]"}),
      {}, 600);
  ASSERT_EQ(r.exit_code, 0) << r.err;

  // What metrics.jsonl holds, counted here independently of the script.
  std::int64_t step_lines = 0, eval_lines = 0, last_step = 0;
  std::istringstream metrics(test::read(d.file("run/metrics.jsonl")));
  for (std::string line; std::getline(metrics, line);) {
    if (line.empty()) continue;
    auto rec = nlohmann::json::parse(line);
    if (rec["event"] == "step") {
      ++step_lines;
      EXPECT_GT(rec["step"].get<std::int64_t>(), last_step) << line;  // every step logged once, in order
      last_step = rec["step"].get<std::int64_t>();
    }
    if (rec["event"] == "eval") ++eval_lines;
  }
  EXPECT_GE(step_lines, 4);
  EXPECT_EQ(step_lines, last_step);  // log_every=1
  EXPECT_EQ(eval_lines, 4);          // 2 benchmarks x (stage 1 end, end)

  auto c = test::run_program(
      {test::python(), test::source_dir() + "/tests/clients/tensorboard_read.py", d.file("run")}, {}, 120);
  ASSERT_EQ(c.exit_code, 0) << c.err << c.out;
  auto j = nlohmann::json::parse(c.out);
  EXPECT_TRUE(j["problems"].empty()) << j["problems"].dump(1);
  EXPECT_EQ(j["event_files"], 1);
  EXPECT_DOUBLE_EQ(j["file_version"].get<double>(), 2.0);
  ASSERT_EQ(j["tags"].size(), 6u) << j["tags"].dump();
  for (const char* tag : {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s"})
    EXPECT_EQ(j["tags"].value(tag, 0), step_lines) << tag;
  for (const char* tag : {"eval/math", "eval/general"}) EXPECT_EQ(j["tags"].value(tag, 0), 2) << tag;
  EXPECT_EQ(j["scalars"], 4 * step_lines + eval_lines);
}

}  // namespace
}  // namespace sft
