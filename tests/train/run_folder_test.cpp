// A folder holds one run (run_folder.h): what a starting run may do with its output folder.
// The refusals through the CLI are in the bad-input corpus; here each rule on a real folder.
#include "sft/train/run_folder.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "sft/util/error.h"
#include "train/run_outputs.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft::train {
namespace {

const nlohmann::json kConfig = {{"run_name", "a"}, {"train", {{"lr", 0.001}, {"epochs", 1}}}};

// A finished run's outputs, as the trainer writes them, beside a file of the user's.
void write_run(const std::string& dir, const nlohmann::json& config) {
  fs::make_dirs(dir + "/final");
  fs::make_dirs(dir + "/stage1_specialised");
  fs::make_dirs(dir + "/tensorboard");
  test::write(dir + "/final/model.safetensors", "weights");
  test::write(dir + "/metrics.jsonl", "{\"step\": 1}\n");
  test::write(dir + "/config.resolved.json", nlohmann::json{{"config", config}}.dump(2));
  test::write(dir + "/data_manifest.json", "{}");
  test::write(dir + "/sft.lock", "");
  test::write(dir + "/notes.txt", "mine");
  test::write(dir + "/sft_outputs.json",
              R"({"outputs": ["config.resolved.json", "data_manifest.json", "final", "metrics.jsonl",
                  "stage1_specialised", "tensorboard", "checkpoints", "eval", "sft_outputs.json"]})");
}

using Entries = std::vector<std::string>;

// The ConfigError's message outputs_to_replace refuses with, or "" when it accepts.
std::string refusal(const std::string& dir, const nlohmann::json& config, bool has_checkpoints, bool resume) {
  try {
    outputs_to_replace(dir, config, has_checkpoints, resume, /*overwrite=*/false);
    return "";
  } catch (const ConfigError& e) {
    return e.what();
  }
}
const Entries kOutputs = {"config.resolved.json", "data_manifest.json", "final",           "metrics.jsonl",
                          "stage1_specialised",   "tensorboard",        "sft_outputs.json"};

TEST(RunFolderOutputs, AFolderWithoutRunOutputsIsUsedAsItIs) {
  test::TempDir d;
  EXPECT_EQ(outputs_to_replace(d.file("missing"), kConfig, false, false, false), Entries{});
  test::write(d.file("config.yaml"), "run_name: a\n");
  test::write(d.file("sft.lock"), "");
  EXPECT_EQ(outputs_to_replace(d.path(), kConfig, false, false, false), Entries{});
}

TEST(RunFolderOutputs, AnotherRunsOutputsAreRefusedUnlessOverwrittenAndTheUsersFilesStay) {
  test::TempDir d;
  write_run(d.path(), {{"run_name", "b"}});
  for (bool resume : {false, true}) {
    const std::string m = refusal(d.path(), kConfig, false, resume);
    ASSERT_FALSE(m.empty()) << "accepted another run's folder (resume " << resume << ")";
    EXPECT_NE(m.find("holds the outputs of another run (its config.resolved.json differs"), std::string::npos)
        << m;
    EXPECT_NE(m.find("final/"), std::string::npos) << m;
    EXPECT_NE(m.find("--overwrite"), std::string::npos) << m;
  }
  EXPECT_EQ(outputs_to_replace(d.path(), kConfig, false, false, true),
            kOutputs);  // not notes.txt, not sft.lock
}

TEST(RunFolderOutputs, ThisRunRestartsUnderResumeAndIsRefusedWithout) {
  test::TempDir d;
  write_run(d.path(), kConfig);
  EXPECT_EQ(outputs_to_replace(d.path(), kConfig, false, true, false), kOutputs);
  const std::string m = refusal(d.path(), kConfig, false, false);
  ASSERT_FALSE(m.empty()) << "a new run overwrote this run's final model";
  EXPECT_NE(m.find("Restart this run with --resume auto"), std::string::npos) << m;
}

TEST(RunFolderOutputs, CheckpointsAreContinuedByResumeAndRefusedOtherwise) {
  test::TempDir d;
  write_run(d.path(), {{"run_name", "b"}});
  // The settings of a resumed run are Trainer::check_resume's to compare, with its overrides.
  EXPECT_EQ(outputs_to_replace(d.path(), kConfig, true, true, false), Entries{});
  const std::string m = refusal(d.path(), kConfig, true, false);
  ASSERT_FALSE(m.empty()) << "a new run mixed into another run's checkpoints";
  EXPECT_NE(m.find("holds checkpoints of an earlier run"), std::string::npos) << m;
}

// --overwrite removes what an earlier run recorded as its own, nothing else: a folder of the
// user's that looks like sft's (eval/), or a run with no record, is refused with nothing removed.
TEST(RunFolderOutputs, OverwriteRefusesOutputsNoRecordNames) {
  test::TempDir d;
  write_run(d.path(), {{"run_name", "b"}});
  test::write(d.path() + "/sft_outputs.json",
              R"({"outputs": ["final", "metrics.jsonl", "sft_outputs.json"]})");
  fs::make_dirs(d.path() + "/eval");
  try {
    outputs_to_replace(d.path(), kConfig, false, false, /*overwrite=*/true);
    FAIL() << "--overwrite would remove folders no record names";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("eval/"), std::string::npos) << m;
    EXPECT_NE(m.find("does not record"), std::string::npos) << m;
    EXPECT_EQ(m.find("final/"), std::string::npos) << m;  // recorded: not the user's
  }
  fs::remove_all(d.path() + "/sft_outputs.json");
  try {
    outputs_to_replace(d.path(), kConfig, false, false, /*overwrite=*/true);
    FAIL() << "--overwrite would remove a run with no record of its outputs";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("no sft_outputs.json records"), std::string::npos) << e.what();
  }
}

// A starting run records what it will write, but not what the user had there before it.
TEST(RunFolderOutputs, TheRecordClaimsOnlyWhatTheRunCreates) {
  test::TempDir d;
  fs::make_dirs(d.path() + "/eval");
  test::write(d.path() + "/notes.txt", "mine");
  record_outputs(d.path(), {"stage1_math"});
  const auto rec = nlohmann::json::parse(test::read(d.path() + "/sft_outputs.json"))["outputs"];
  auto has = [&](const std::string& e) { return std::find(rec.begin(), rec.end(), e) != rec.end(); };
  EXPECT_TRUE(has("final") && has("metrics.jsonl") && has("stage1_math") && has("checkpoints")) << rec.dump();
  EXPECT_FALSE(has("eval")) << rec.dump();
  EXPECT_FALSE(has("notes.txt")) << rec.dump();
  // A resumed run keeps what the record held, though those entries now exist.
  fs::make_dirs(d.path() + "/final");
  record_outputs(d.path(), {});
  const auto again = nlohmann::json::parse(test::read(d.path() + "/sft_outputs.json"))["outputs"];
  EXPECT_NE(std::find(again.begin(), again.end(), "final"), again.end()) << again.dump();
  EXPECT_NE(std::find(again.begin(), again.end(), "stage1_math"), again.end()) << again.dump();
}

TEST(RunFolderOutputs, OnlyWhatSftWritesCountsAsARunsOutput) {
  for (const char* yes :
       {"checkpoints", "final", "eval", "eval.json", "stage1_specialised", "stage12_general_chat"})
    EXPECT_TRUE(is_run_output(yes)) << yes;
  for (const char* no :
       {"sft.lock", "stage", "stage_x", "stage1_", "stagex_a", "notes.txt", "config.yaml", "final2"})
    EXPECT_FALSE(is_run_output(no)) << no;
}

}  // namespace
}  // namespace sft::train
