// Crash safety end to end: SIGKILL at random steps, SIGTERM, a corrupted checkpoint. Every
// resumed run must end with weights bit-identical to an uninterrupted run (CPU).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "sft/train/checkpoint.h"
#include "sft/util/fs.h"
#include "sft/util/rng.h"
#include "test_util.h"

namespace sft {
namespace {

std::vector<std::string> tiny_args(const std::string& out, const std::string& cache) {
  return {"train", "--config", "configs/tiny/dmt.yaml", "--output-dir", out,
          "--set", "datasets.math.fraction=1/16", "--set", "datasets.code.fraction=1/16",
          "--set", "datasets.general.fraction=1/8", "--set", "train.save_every=2", "--set", "train.log_every=1",
          "--set", "train.threads=1", "--set", "train.keep_checkpoints=3", "--set", "data.cache_dir=" + cache};
}

std::int64_t last_logged_step(const std::string& metrics) {
  std::int64_t last = 0;
  std::istringstream in(test::read(metrics));
  std::string line;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j["event"] == "step") last = j["step"];
    } catch (...) {
    }
  }
  return last;
}

struct Reference {
  test::TempDir dir;
  std::string weights;
  Reference() {
    auto r = test::run_sft(tiny_args(dir.file("run"), dir.file("cache")));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    weights = test::read(dir.file("run/final/model.safetensors"));
  }
};

// Starts a run and SIGKILLs (or signals) it once it has logged `step` steps.
int interrupt_at(const std::vector<std::string>& args, const std::string& out, std::int64_t step, int sig,
                 std::string* err = nullptr) {
  test::Process p = test::spawn_sft(args);
  const std::string metrics = out + "/metrics.jsonl";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (test::process_running(p) && std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(metrics) && last_logged_step(metrics) >= step) {
      ::kill(p.pid, sig);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  int code = test::wait_process(p, 300);
  if (err) *err = test::read(p.err_path);
  return code;
}

TEST(Resume, SigkillAtRandomStepsThenResumeIsBitIdentical) {
  Reference ref;
  ASSERT_FALSE(ref.weights.empty());
  Rng rng(2024);
  for (int trial = 0; trial < 3; ++trial) {
    test::TempDir d;
    const std::string out = d.file("run");
    auto args = tiny_args(out, ref.dir.file("cache"));
    const std::int64_t kill_step = 3 + static_cast<std::int64_t>(rng.below(16));  // the run has 21 steps
    int code = interrupt_at(args, out, kill_step, SIGKILL);
    EXPECT_EQ(code, 128 + SIGKILL) << "trial " << trial << " kill at step " << kill_step;
    args.push_back("--resume");
    args.push_back("auto");
    auto r = test::run_sft(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("resumed from"), std::string::npos) << r.err;
    EXPECT_TRUE(test::read(out + "/final/model.safetensors") == ref.weights)
        << "trial " << trial << ": weights differ after a SIGKILL at step " << kill_step;
  }
}

TEST(Resume, SigtermSavesACheckpointAndExitsWithAResumeHint) {
  Reference ref;
  test::TempDir d;
  const std::string out = d.file("run");
  auto args = tiny_args(out, ref.dir.file("cache"));
  std::string err;
  int code = interrupt_at(args, out, 7, SIGTERM, &err);
  EXPECT_EQ(code, 128 + SIGTERM) << err;
  EXPECT_NE(err.find("checkpoint saved. Resume with: sft train --config configs/tiny/dmt.yaml"), std::string::npos) << err;
  EXPECT_NE(err.find("--resume auto"), std::string::npos) << err;
  train::CheckpointStore store(out + "/checkpoints");
  auto latest = store.latest_good();
  ASSERT_TRUE(latest.has_value());
  EXPECT_GE(latest->global_step, 7);
  EXPECT_EQ(store.verify(latest->dir), "");
  args.push_back("--resume");
  args.push_back("auto");
  auto r = test::run_sft(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(test::read(out + "/final/model.safetensors") == ref.weights);
}

TEST(Resume, ACorruptNewestCheckpointFallsBackToThePreviousOne) {
  Reference ref;
  test::TempDir d;
  const std::string out = d.file("run");
  auto args = tiny_args(out, ref.dir.file("cache"));
  ASSERT_EQ(interrupt_at(args, out, 9, SIGKILL), 128 + SIGKILL);
  train::CheckpointStore store(out + "/checkpoints");
  auto all = store.list();
  ASSERT_GE(all.size(), 2u);
  // Flip one byte in the middle of the newest checkpoint's state.
  const std::string victim = all[0].dir + "/state.safetensors";
  std::string bytes = test::read(victim);
  bytes[bytes.size() / 2] ^= 0x01;
  test::write(victim, bytes);
  EXPECT_NE(store.verify(all[0].dir).find("SHA-256"), std::string::npos);
  args.push_back("--resume");
  args.push_back("auto");
  auto r = test::run_sft(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("is unusable"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("resumed from " + all[1].dir), std::string::npos) << r.err;
  EXPECT_TRUE(test::read(out + "/final/model.safetensors") == ref.weights);
}

TEST(Resume, RefusesToMixRunsAndToResumeADifferentStream) {
  test::TempDir d;
  const std::string out = d.file("run");
  auto args = tiny_args(out, d.file("cache"));
  args.push_back("--set");
  args.push_back("train.max_steps=3");
  ASSERT_EQ(test::run_sft(args).exit_code, 0);
  auto again = test::run_sft(args);
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("--resume auto"), std::string::npos) << again.err;
  auto other = args;
  other.insert(other.end(), {"--set", "seed=9", "--resume", "auto"});
  auto r = test::run_sft(other);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("data stream differs"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace sft
