// What a run's end needs is checked at its start, before anything is trained or written: the
// sandbox that scores code, a folder it can write, room for a checkpoint and the export.
#include <gtest/gtest.h>

#include "sft/util/fs.h"
#include "test_util.h"

namespace sft {
namespace {

// One step of the tiny run on all of its data.
std::vector<std::string> tiny(const std::string& out, const std::string& cache,
                              const std::vector<std::string>& extra) {
  std::vector<std::string> sets = {"train.max_steps=1"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return test::train_args(out, cache, sets);
}

// A node where the sandbox cannot run (here: said so through the test hook) stops a run that
// evaluates code at its start, exit code 2, naming the benchmark and the ways out; nothing is
// written.
TEST(RunStart, CodeEvaluationWithoutASandboxIsRefusedBeforeTraining) {
  test::TempDir d;
  auto r = test::run_sft(
      tiny(d.file("run"), d.file("cache"), {"eval.at_end=true", "eval.benchmarks=[math, code]"}),
      {{"SFT_TEST_SANDBOX_UNAVAILABLE", "user namespaces are off on this node"}});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("eval.benchmarks[1]: code runs the model's programs in sft's sandbox"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("user namespaces are off on this node"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("sft eval --model"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(d.file("run")));
  // Without code to score, the same node trains.
  auto ok = test::run_sft(
      tiny(d.file("run2"), d.file("cache"),
           {"eval.at_end=true", "eval.benchmarks=[{name: math, limit: 2}]", "eval.max_new_tokens=4"}),
      {{"SFT_TEST_SANDBOX_UNAVAILABLE", "user namespaces are off on this node"}});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

// A model whose checkpoint would not fit on the output folder's filesystem (70B parameters:
// about 1 TB) is refused before it is built.
TEST(RunStart, AnOutputFolderWithoutRoomForACheckpointIsRefused) {
  test::TempDir d;
  auto r = test::run_sft(tiny(d.file("run"), d.file("cache"),
                              {"model.config.hidden_size=8192", "model.config.intermediate_size=28672",
                               "model.config.num_hidden_layers=80", "model.config.num_attention_heads=64",
                               "model.config.num_key_value_heads=8"}));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("for one checkpoint"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("GiB free"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(d.file("run")));
}

TEST(RunStart, AnOutputFolderUnderAFileIsRefused) {
  test::TempDir d;
  test::write(d.file("afile"), "not a folder\n");
  auto r = test::run_sft(tiny(d.file("afile/run"), d.file("cache"), {}));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("is a file, not a folder"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace sft
