// Crash safety end to end: SIGKILL at random steps, SIGTERM, a corrupted checkpoint. Every
// resumed run must end with weights bit-identical to an uninterrupted run (CPU).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "sft/train/checkpoint.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"
#include "sft/util/rng.h"
#include "test_util.h"

namespace sft {
namespace {

std::vector<std::string> tiny_args(const std::string& out, const std::string& cache) {
  return test::tiny_train_args(
      out, cache, {"train.save_every=2", "train.log_every=1", "train.threads=1", "train.keep_checkpoints=3"});
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
  for (int trial = 0; trial < 2; ++trial) {
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

// Checkpoints written in a background thread (train.async_checkpoint) while training goes on:
// a SIGKILL at any moment, a save in flight included, leaves the last completed checkpoint,
// and resuming from it ends bit-identical; the completed ones verify.
TEST(Resume, AsyncCheckpointsSurviveASigkillMidSave) {
  Reference ref;
  ASSERT_FALSE(ref.weights.empty());
  Rng rng(7);
  for (int trial = 0; trial < 2; ++trial) {
    test::TempDir d;
    const std::string out = d.file("run");
    auto args = tiny_args(out, ref.dir.file("cache"));
    args.insert(args.end(), {"--set", "train.async_checkpoint=true"});
    const std::int64_t kill_step = 4 + static_cast<std::int64_t>(rng.below(14));
    EXPECT_EQ(interrupt_at(args, out, kill_step, SIGKILL), 128 + SIGKILL) << "kill at step " << kill_step;
    train::CheckpointStore store(out + "/checkpoints");
    for (const auto& c : store.list()) EXPECT_EQ(store.verify(c.dir), "") << c.dir;
    args.insert(args.end(), {"--resume", "auto"});
    auto r = test::run_sft(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(test::read(out + "/final/model.safetensors") == ref.weights)
        << "trial " << trial << ": weights differ after a SIGKILL at step " << kill_step;
    EXPECT_EQ(store.verify(store.list().front().dir), "");
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
  EXPECT_NE(err.find("checkpoint saved. Resume with: sft train --config configs/tiny/dmt.yaml"),
            std::string::npos)
      << err;
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
  const std::string victim = all[0].dir + "/state.safetensors";
  {
    // A NaN written into the weights, with the manifest's size and checksum made to match
    // (issue 33): the checksums pass, the values are refused (exit 2), and nothing is trained.
    std::string bytes = test::read(victim);
    std::uint64_t header_len = 0;
    std::memcpy(&header_len, bytes.data(), 8);
    const auto header = nlohmann::json::parse(bytes.substr(8, header_len));
    ASSERT_EQ(header["params"]["dtype"], "F32");
    const std::size_t at = 8 + header_len + header["params"]["data_offsets"][0].get<std::size_t>() + 4 * 10;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(bytes.data() + at, &nan, 4);
    test::write(victim, bytes);
    auto manifest = nlohmann::json::parse(test::read(all[0].dir + "/manifest.json"));
    manifest["files"]["state.safetensors"]["sha256"] = sha256_file(victim);
    test::write(all[0].dir + "/manifest.json", manifest.dump());
    ASSERT_EQ(store.verify(all[0].dir), "");
    auto resume = args;
    resume.insert(resume.end(), {"--resume", "auto"});
    auto r = test::run_sft(resume);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find(all[0].dir + "/state.safetensors: params holds NaN or infinite values"),
              std::string::npos)
        << r.err;
    EXPECT_FALSE(fs::exists(out + "/final"));
  }
  // Flip one byte in the middle of the newest checkpoint's state.
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
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("seed: the checkpoint has 1, this run has 9"), std::string::npos) << r.err;
  // Overriding the seed is allowed, but its data stream is another one: still refused (bad
  // input, exit code 2), before the run appends to metrics.jsonl or starts a TensorBoard file.
  const std::string metrics = test::read(out + "/metrics.jsonl");
  const auto events = fs::list_dir(out + "/tensorboard");
  other.insert(other.end(), {"--resume-override", "seed"});
  r = test::run_sft(other);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("data stream differs"), std::string::npos) << r.err;
  EXPECT_EQ(test::read(out + "/metrics.jsonl"), metrics);
  EXPECT_EQ(fs::list_dir(out + "/tensorboard"), events);
}

// Every file of a run folder with its bytes, but the lock (a refused process may probe it).
std::map<std::string, std::string> folder(const std::string& dir, const std::string& rel = "") {
  std::map<std::string, std::string> out;
  for (const auto& name : fs::list_dir(fs::join(dir, rel))) {
    const std::string r = rel.empty() ? name : rel + "/" + name;
    if (r == "sft.lock") continue;
    if (fs::is_dir(fs::join(dir, r))) {
      for (auto& [k, v] : folder(dir, r)) out[k] = v;
    } else {
      out[r] = test::read(fs::join(dir, r));
    }
  }
  return out;
}

// Resuming continues the checkpoint's run or nothing: another architecture of the same size,
// or a changed learning rate, is refused naming the key and both values, with the folder left
// as it was; a change named with --resume-override goes on and is recorded.
TEST(Resume, AnotherModelOrChangedHyperParametersAreRefusedUnlessOverriddenAndRecorded) {
  test::TempDir d;
  const std::string out = d.file("run");
  auto args = tiny_args(out, d.file("cache"));
  args.insert(args.end(), {"--set", "train.max_steps=2", "--set", "train.save_every=1"});
  ASSERT_EQ(test::run_sft(args).exit_code, 0);
  const auto before = folder(out);
  auto resume = args;
  resume.insert(resume.end(), {"--set", "train.max_steps=3", "--resume", "auto"});

  auto lr = resume;
  lr.insert(lr.end(), {"--set", "train.lr=0.01"});
  auto r = test::run_sft(lr);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("train.lr: the checkpoint has 0.002, this run has 0.01"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--resume-override"), std::string::npos) << r.err;
  EXPECT_EQ(folder(out), before) << "a refused resume changed the run folder";

  // The same parameter count, another shape: 8 heads of 16 instead of 4 of 32.
  auto heads = resume;
  heads.insert(heads.end(), {"--set", "model.config.num_attention_heads=8", "--set",
                             "model.config.num_key_value_heads=4"});
  r = test::run_sft(heads);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("model num_attention_heads: the checkpoint has 4, this run has 8"), std::string::npos)
      << r.err;
  EXPECT_EQ(folder(out), before) << "a refused resume changed the run folder";

  lr.insert(lr.end(), {"--resume-override", "train.lr"});
  r = test::run_sft(lr);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto resolved = nlohmann::json::parse(test::read(out + "/config.resolved.json"));
  ASSERT_TRUE(resolved.contains("resume_overrides")) << resolved.dump();
  nlohmann::json lr_change;
  for (const auto& o : resolved["resume_overrides"])
    if (o["key"] == "train.lr") lr_change = o;
  ASSERT_TRUE(lr_change.is_object()) << resolved["resume_overrides"].dump();
  EXPECT_EQ(lr_change["checkpoint"], "0.002");
  EXPECT_EQ(lr_change["now"], "0.01");
  EXPECT_EQ(lr_change["from_step"], 2);
}

}  // namespace
}  // namespace sft
