// Runs that cannot collide: one writer per run folder (sft train, --resume auto, sweeps
// sharing a runs_dir), a sweep that passes SIGTERM to its runs and takes them down with it,
// and every file a run needs later checked before anything trains.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "sft/util/fs.h"
#include "sft/util/run_lock.h"
#include "test_util.h"

namespace sft {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::string> tiny_args(const std::string& out, const std::string& cache,
                                   const std::vector<std::string>& extra = {}) {
  std::vector<std::string> sets = {"train.log_every=1", "train.threads=1"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return test::tiny_train_args(out, cache, sets);
}

bool wait_for(const std::function<bool()>& cond, int timeout_s) {
  const auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  while (Clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

std::string hostname() {
  char h[256] = {0};
  ::gethostname(h, sizeof h - 1);
  return h;
}

// How many times a run trained its first step (two writers would log it twice).
int first_steps(const std::string& metrics) {
  if (!fs::exists(metrics)) return 0;
  std::istringstream in(test::read(metrics));
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("event", "") == "step" && j.value("step", 0) == 1) ++n;
  }
  return n;
}

int pid_in_lock(const std::string& dir) {
  const std::string s = test::read(RunLock::lock_path(dir));
  return s.rfind("pid ", 0) == 0 ? std::atoi(s.c_str() + 4) : -1;
}

TEST(RunFolder, ALockedFolderIsRefusedAtOnceNamingTheHoldersPidAndHost) {
  test::TempDir d;
  const std::string out = d.file("run");
  auto lock = RunLock::acquire(out);  // this test process holds it
  const auto start = Clock::now();
  auto r = test::run_sft(tiny_args(out, d.file("cache")), {}, 120);
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(r.exit_code, 75) << r.err;
  EXPECT_LT(secs, 10.0);
  EXPECT_NE(r.err.find("in use by pid " + std::to_string(::getpid()) + " on host " + hostname()),
            std::string::npos)
      << r.err;
  // Refused before writing anything: the folder holds the lock file only.
  EXPECT_EQ(fs::list_dir(out), std::vector<std::string>{"sft.lock"});
  // --resume auto is refused the same way.
  std::vector<std::string> resume = tiny_args(out, d.file("cache"));
  resume.insert(resume.end(), {"--resume", "auto"});
  auto again = test::run_sft(resume, {}, 120);
  EXPECT_EQ(again.exit_code, 75);
  lock.reset();
  EXPECT_EQ(RunLock::holder(out), "");
}

// Two real trainers on one folder: the second is refused while the first trains; once the
// first is SIGKILLed its lock is gone with it, and --resume auto continues the run.
TEST(RunFolder, ASecondTrainerIsRefusedAndAKilledOneLeavesNoStaleLock) {
  test::TempDir d;
  const std::string out = d.file("run");
  const std::vector<std::string> sets = {"train.save_every=2",
                                         "train.epochs=10"};  // long enough to be caught
  test::Process first = test::spawn_sft(tiny_args(out, d.file("cache"), sets));
  ASSERT_TRUE(wait_for([&] { return fs::exists(out + "/checkpoints/step_00000002"); }, 300))
      << test::read(first.err_path);
  auto second = test::run_sft(tiny_args(out, d.file("cache"), sets), {}, 120);
  EXPECT_EQ(second.exit_code, 75) << second.err;
  EXPECT_NE(second.err.find("in use by pid " + std::to_string(first.pid)), std::string::npos) << second.err;
  auto resume = test::run_sft(
      {"train", "--config", "configs/tiny/dmt.yaml", "--output-dir", out, "--resume", "auto"}, {}, 120);
  EXPECT_EQ(resume.exit_code, 75) << "a --resume auto while the run trains";
  EXPECT_TRUE(test::process_running(first)) << "the refused trainers must leave the first alone";
  EXPECT_EQ(first_steps(out + "/metrics.jsonl"), 1);

  ::kill(first.pid, SIGKILL);
  test::wait_process(first, 30);
  EXPECT_EQ(RunLock::holder(out), "") << "the kernel released the dead process's lock";
  auto cont = test::run_sft(tiny_args(out, d.file("cache"), sets), {}, 300);
  // (plain `sft train` without --resume: refused for the earlier run's checkpoints, not the lock)
  EXPECT_EQ(cont.exit_code, 2) << cont.err;
  EXPECT_NE(cont.err.find("holds checkpoints of an earlier run"), std::string::npos) << cont.err;
  auto a = tiny_args(out, d.file("cache"), {"train.save_every=2", "train.epochs=10", "train.max_steps=6"});
  a.insert(a.end(), {"--resume", "auto"});
  auto resumed = test::run_sft(a, {}, 300);
  EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resumed from"), std::string::npos) << resumed.err;
}

// A job scheduler and a parent sweep both signalling deliver SIGTERM twice: within a second
// that is one request, so the trainer still saves its checkpoint (a later second signal
// still exits at once).
TEST(RunFolder, ASignalDeliveredTwiceAtOnceStillSavesACheckpoint) {
  test::TempDir d;
  const std::string out = d.file("run");
  test::Process p = test::spawn_sft(tiny_args(out, d.file("cache"), {"train.epochs=10"}));
  ASSERT_TRUE(wait_for([&] { return first_steps(out + "/metrics.jsonl") == 1; }, 300))
      << test::read(p.err_path);
  ::kill(p.pid, SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ::kill(p.pid, SIGTERM);
  EXPECT_EQ(test::wait_process(p, 120), 143);
  const std::string err = test::read(p.err_path);
  EXPECT_NE(err.find("checkpoint saved"), std::string::npos) << err;
  EXPECT_EQ(err.find("second signal"), std::string::npos) << err;
  EXPECT_FALSE(fs::list_dir(out + "/checkpoints").empty());
}

// The eval block, the tokenizer and the model folder are checked when the config is loaded:
// a bad file fails in about a second, naming the config key, before anything is written.
TEST(RunInputs, ABadEvalFileOrNameFailsBeforeTrainingNamingTheConfigKey) {
  test::TempDir d;
  test::write(d.file("bad.jsonl"), "{\"question\": \"1+1?\", \"answer\": \"#### 2\"}\nnot json\n");
  test::write(d.file("empty.jsonl"), "");
  struct Case {
    std::vector<std::string> sets;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"eval.at_end=true", "eval.benchmarks=[{name: math, data: " + d.file("bad.jsonl") + "}]"},
       "eval.benchmarks[0].data: " + d.file("bad.jsonl") + ":2: malformed JSON"},
      {{"eval.at_end=true",
        "eval.benchmarks=[{name: math, data: data/tiny/math_test.jsonl}, {name: general, data: " +
            d.file("bad.jsonl") + "}]"},
       "eval.benchmarks[1].data: " + d.file("bad.jsonl") + ":1: missing field \"conversations\""},
      {{"eval.at_stage_end=true", "eval.benchmarks=[{name: code, data: " + d.file("none.jsonl") + "}]"},
       "eval.benchmarks[0].data: " + d.file("none.jsonl") + " not found"},
      {{"eval.at_end=true", "eval.benchmarks=[{name: code, data: " + d.file("empty.jsonl") + "}]"},
       "eval.benchmarks[0].data: "},
      {{"eval.at_end=true", "eval.benchmarks=[{name: maths}]"},
       "eval.benchmarks[0].name: \"maths\" is not one of"},
      {{"eval.at_end=true", "eval.benchmarks=[gsm8k]"},
       "eval.benchmarks[0].data: missing; gsm8k needs its data file"},
      {{"tokenizer.path=" + d.file("no.model")}, "tokenizer.path: " + d.file("no.model") + " not found"},
      {{"model.path=" + d.file("nomodel")}, "model.path: " + d.file("nomodel") + " is not a folder"},
  };
  for (const auto& c : cases) {
    const auto start = Clock::now();
    auto r = test::run_sft(tiny_args(d.file("run"), d.file("cache"), c.sets), {}, 60);
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    EXPECT_EQ(r.exit_code, 2) << c.sets.back() << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_LT(secs, 3.0) << c.sets.back() << ": found after " << secs << " s";  // ~0.4 s here
    EXPECT_FALSE(fs::exists(d.file("run"))) << "nothing is written before the check";
  }
  // Written in the config file, the key comes with the file and line.
  std::string text = test::read(test::source_dir() + "/configs/tiny/dmt.yaml");
  const auto line = std::count(text.begin(), text.end(), '\n') + 4;
  text += "eval:\n  at_end: true\n  benchmarks:\n    - {name: math, data: " + d.file("bad.jsonl") + "}\n";
  test::write(d.file("with_eval.yaml"), text);
  auto r =
      test::run_sft({"train", "--config", d.file("with_eval.yaml"), "--output-dir", d.file("run")}, {}, 60);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(d.file("with_eval.yaml") + ":" + std::to_string(line) +
                       ": eval.benchmarks[0].data: " + d.file("bad.jsonl") + ":2: malformed JSON"),
            std::string::npos)
      << r.err;
}

// Sweeps ----------------------------------------------------------------------------------

// A micro-sweep on the tiny model (from random init: these tests are about the sweep, not
// the pretrained base): two seeds, a few steps each, a tiny eval (so that a run counts as
// finished). `steps` 0 trains the whole stage.
std::string micro_sweep(const test::TempDir& d, const std::string& name, int steps) {
  const std::string file = d.file(name + ".yaml");
  test::write(file, "name: " + name +
                        "\n"
                        "base: configs/repro/base.yaml\n"
                        "set:\n"
                        "  train.threads: 1\n"
                        "  model.path: ''\n"
                        "  model.init: random\n"
                        "  train.log_every: 1\n"
                        "  train.save_every: 2\n"
                        "  train.max_steps: " +
                        std::to_string(steps) +
                        "\n"
                        "  data.cache_dir: " +
                        d.file("cache") +
                        "\n"
                        "  datasets.math.fraction: " +
                        std::string(steps ? "1/16" : "1/4") +
                        "\n"
                        "  datasets.code.fraction: 1/64\n"
                        "  datasets.general.fraction: 1/64\n"
                        "  eval.max_new_tokens: 8\n"
                        "  eval.benchmarks: [{name: math, data: data/tiny/math_test.jsonl, limit: 4}]\n"
                        "axes:\n"
                        "  seed: [1, 2]\n"
                        "output_dir: " +
                        d.file(name + "_out") +
                        "\n"
                        "runs_dir: " +
                        d.file("runs") + "\n");
  return file;
}

std::vector<std::string> run_dirs(const std::string& sweep_file) {
  auto r = test::run_sft({"sweep", "--dry-run", "--json", "--config", sweep_file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> dirs;
  const auto plan = nlohmann::json::parse(r.out);
  for (const auto& run : plan["list"]) dirs.push_back(run["dir"]);
  return dirs;
}

TEST(SweepSafety, ASweepSkipsARunAnotherProcessHoldsAndSaysSo) {
  test::TempDir d;
  const std::string file = micro_sweep(d, "held", 4);
  const auto dirs = run_dirs(file);
  ASSERT_EQ(dirs.size(), 2u);
  auto lock = RunLock::acquire(dirs[0]);
  auto r = test::run_sft({"sweep", "--config", file}, {}, 600);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const std::string log = r.out + r.err;
  EXPECT_NE(log.find("skipped: " + dirs[0] + " is in use by pid " + std::to_string(::getpid())),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("1 skipped"), std::string::npos) << log;
  EXPECT_EQ(first_steps(dirs[0] + "/metrics.jsonl"), 0) << "the held run was not trained";
  EXPECT_TRUE(fs::exists(dirs[1] + "/eval/summary.json")) << "the other run was";
}

// Two sweeps sharing a runs_dir, started together: every run trains exactly once.
TEST(SweepSafety, TwoSweepsSharingARunsDirTrainEachRunOnce) {
  test::TempDir d;
  const std::string a = micro_sweep(d, "first", 6), b = micro_sweep(d, "second", 6);
  const auto dirs = run_dirs(a);
  ASSERT_EQ(run_dirs(b), dirs) << "the same runs";
  test::Process pa = test::spawn_sft({"sweep", "--config", a});
  test::Process pb = test::spawn_sft({"sweep", "--config", b});
  EXPECT_EQ(test::wait_process(pa, 600), 0) << test::read(pa.err_path);
  EXPECT_EQ(test::wait_process(pb, 600), 0) << test::read(pb.err_path);
  for (const auto& dir : dirs) {
    EXPECT_EQ(first_steps(dir + "/metrics.jsonl"), 1) << dir << " trained more than once:\n"
                                                      << test::read(dir + "/train.log");
    EXPECT_TRUE(fs::exists(dir + "/eval/summary.json")) << dir;
  }
}

// SIGTERM to a sweep reaches its running child, which saves a checkpoint and exits; the
// sweep waits for it and exits 143. Killed outright (SIGKILL), the sweep still takes its
// child down (SIGTERM from the kernel when its parent dies): no orphan keeps training.
TEST(SweepSafety, SigtermReachesTheRunningChildAndSigkillLeavesNoOrphan) {
  for (int sig : {SIGTERM, SIGKILL}) {
    test::TempDir d;
    const std::string file = micro_sweep(d, "stopped", 0);
    const auto dirs = run_dirs(file);
    test::Process sweep = test::spawn_sft({"sweep", "--config", file});
    ASSERT_TRUE(wait_for([&] { return first_steps(dirs[0] + "/metrics.jsonl") == 1; }, 300))
        << test::read(sweep.err_path);
    const int child = pid_in_lock(dirs[0]);
    ASSERT_GT(child, 0);
    ASSERT_NE(RunLock::holder(dirs[0]), "");
    ::kill(sweep.pid, sig);
    const int code = test::wait_process(sweep, 120);
    if (sig == SIGTERM) {
      EXPECT_EQ(code, 143) << test::read(sweep.err_path);
      EXPECT_NE(test::read(sweep.err_path).find("stopped by signal 15"), std::string::npos)
          << test::read(sweep.err_path);
    }
    // The child is gone (its lock with it) and left a checkpoint to resume from.
    EXPECT_TRUE(wait_for([&] { return RunLock::holder(dirs[0]).empty(); }, 120))
        << "signal " << sig << ": pid " << child << " still runs";
    EXPECT_NE(test::read(dirs[0] + "/train.log").find("checkpoint saved"), std::string::npos)
        << test::read(dirs[0] + "/train.log");
    EXPECT_FALSE(fs::exists(dirs[1] + "/metrics.jsonl")) << "the sweep started nothing after the signal";
  }
}

}  // namespace
}  // namespace sft
