// Distributed training over real c10d process groups on loopback (Gloo, 2 CPU ranks):
// DDP and ZeRO-1/2/3 against a single process on the same global batch, torchrun and
// plain environment launches, a dying rank, and sharded checkpoints resuming exactly.
#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <signal.h>

#include <ATen/ATen.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "sft/dist/launch.h"
#include "sft/model/safetensors.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft {
namespace {

// Tolerance: ranks sum their micro-batches' gradients in a different order than one
// process accumulating them, and ZeRO sums the squared gradient norm chunk by chunk;
// after 4 fp32 AdamW steps every weight agrees to 1e-5 absolute (observed: 4e-7).
constexpr double kTolerance = 1e-5;

std::vector<std::string> args(const std::string& out, const std::string& cache,
                              const std::vector<std::string>& extra) {
  std::vector<std::string> sets = {"train.precision=fp32", "train.threads=1",
                                   "train.export_stage_models=false", "dist.timeout_s=30"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return test::tiny_train_args(out, cache, sets);
}

// Runs `world` ranks with plain environment variables; returns each rank's exit code.
std::vector<int> launch(int world, const std::vector<std::string>& a,
                        std::vector<test::Process>* procs = nullptr) {
  const int port = test::free_port();
  std::vector<test::Process> ps;
  for (int r = 0; r < world; ++r) ps.push_back(test::spawn_sft(a, test::rank_env(r, world, port)));
  if (procs) {
    *procs = ps;
    return {};
  }
  std::vector<int> codes;
  for (auto& p : ps) codes.push_back(test::wait_process(p, 600));
  for (std::size_t r = 0; r < ps.size(); ++r)
    if (codes[r] != 0)
      ADD_FAILURE() << "rank " << r << " exited " << codes[r] << ":\n" << test::read(ps[r].err_path);
  return codes;
}

class TwoRanks : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    // The single-process reference: micro-batches of 4 rows, 2 per step = the 2-rank global batch.
    auto r = test::run_sft(args(dir_->file("single"), dir_->file("cache"),
                                {"train.batch_size=4", "train.grad_accum=2", "train.max_steps=4"}));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { delete dir_; }
  static test::TempDir* dir_;
};
test::TempDir* TwoRanks::dir_ = nullptr;

TEST_F(TwoRanks, DdpAndEveryZeroStageMatchASingleProcess) {
  for (const char* strategy : {"ddp", "zero1", "zero2", "zero3"}) {
    test::TempDir d;
    launch(2, args(d.file("run"), dir_->file("cache"),
                   {"train.batch_size=4", "train.grad_accum=1", "train.max_steps=4",
                    std::string("dist.strategy=") + strategy}));
    ASSERT_TRUE(fs::exists(d.file("run/final/model.safetensors"))) << strategy;
    double diff = test::max_weight_diff(dir_->file("single/final"), d.file("run/final"));
    EXPECT_LT(diff, kTolerance) << strategy;
    // The loss curve rank 0 logs is the global one.
    EXPECT_NE(test::read(d.file("run/metrics.jsonl")).find("\"step\":4"), std::string::npos);
  }
}

// Qwen2 (q/k/v biases, tied embeddings) and Qwen3 (per-head q/k norms, head_dim 48 where
// hidden/heads is 32): ZeRO-3 on two ranks gathers each layer as one flat unit, views the new
// weights in it without copies and reduces their gradients as one process trains them.
TEST_F(TwoRanks, Zero3OnQwen2AndQwen3MatchesASingleProcess) {
  const std::vector<std::vector<std::string>> archs = {
      {"model.config.model_type=qwen2", "model.config.tie_word_embeddings=true",
       "model.config.rope_theta=1000000"},
      {"model.config.model_type=qwen3", "model.config.head_dim=48"}};
  for (const auto& arch : archs) {
    const std::string type = arch[0].substr(arch[0].find('=') + 1);
    SCOPED_TRACE(type);
    test::TempDir d;
    auto single = arch, sharded = arch;
    single.insert(single.end(), {"train.batch_size=4", "train.grad_accum=2", "train.max_steps=4"});
    sharded.insert(sharded.end(),
                   {"train.batch_size=4", "train.grad_accum=1", "train.max_steps=4", "dist.strategy=zero3"});
    auto r = test::run_sft(args(d.file("single"), dir_->file("cache"), single));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    launch(2, args(d.file("run"), dir_->file("cache"), sharded));
    ASSERT_TRUE(fs::exists(d.file("run/final/model.safetensors")));
    EXPECT_EQ(nlohmann::json::parse(test::read(d.file("run/final/config.json")))["model_type"], type);
    // The new weights trained (biases start at 0, norms at 1) and are among those compared.
    auto f = model::SafetensorsFile::open(d.file("run/final/model.safetensors"));
    const std::string name =
        type == "qwen2" ? "model.layers.0.self_attn.q_proj.bias" : "model.layers.0.self_attn.q_norm.weight";
    EXPECT_GT((f->tensor(name) - (type == "qwen2" ? 0.0 : 1.0)).abs().max().item<double>(), 1e-4) << name;
    const double diff = test::max_weight_diff(d.file("single/final"), d.file("run/final"));
    std::cout << "[ measured ] " << type
              << ": ZeRO-3 on 2 Gloo ranks vs one process, 4 fp32 steps: max |delta weight| = " << diff
              << "\n";
    EXPECT_LT(diff, kTolerance);
  }
}

// A global batch in samples: two ranks packing their share of each step's 24 samples (a rank
// may get fewer micro-batches than the other: it runs empty ones) train what one process
// padding the same samples trains.
TEST_F(TwoRanks, SamplesPerStepOnTwoPackingRanksMatchesOnePaddingProcess) {
  test::TempDir d;
  const std::vector<std::string> common = {"train.samples_per_step=24", "train.tokens_per_micro_batch=1024",
                                           "train.max_steps=6"};
  auto one = common, two = common;
  one.push_back("data.batching=pad");
  two.push_back("data.batching=pack");
  auto r = test::run_sft(args(d.file("single"), dir_->file("cache"), one));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  launch(2, args(d.file("run"), dir_->file("cache"), two));
  ASSERT_TRUE(fs::exists(d.file("run/final/model.safetensors")));
  EXPECT_LT(test::max_weight_diff(d.file("single/final"), d.file("run/final")), kTolerance);
}

// Never materialising what a rank does not own: each ZeRO-3 rank of a 3.4M-parameter model
// holds half of the 16 bytes of training state per parameter, and building it peaks barely
// above that (one parameter of the seeded init in flight), where building the whole model
// first and sharding it after would add 4 bytes per parameter of every parameter.
TEST_F(TwoRanks, AZero3RankBuildsOnlyItsShards) {
  test::TempDir d;
  launch(2, args(d.file("run"), dir_->file("cache"),
                 {"dist.strategy=zero3", "train.max_steps=1", "train.batch_size=2",
                  "model.config.hidden_size=256", "model.config.intermediate_size=688",
                  "model.config.num_hidden_layers=4"}));
  nlohmann::json build;
  std::istringstream in(test::read(d.file("run/metrics.jsonl")));
  for (std::string line; std::getline(in, line);)
    if (auto j = nlohmann::json::parse(line); j["event"] == "build") build = j;
  ASSERT_TRUE(build.is_object()) << test::read(d.file("run/metrics.jsonl"));
  const double n = build["parameters"].get<double>();
  const double state = build["state_bytes"].get<double>(), peak = build["build_peak_bytes"].get<double>();
  EXPECT_NEAR(state, 16.0 * n / 2, 0.01 * 16.0 * n / 2)
      << "params, grads and both moments: half of them each";
  EXPECT_GE(peak, state);
  EXPECT_LT(peak - state, 4.0 * n / 4)
      << "building held " << (peak - state) / 1048576.0 << " MiB beyond the state";
}

// The dry-run planner, proven: 2 Gloo ranks train a 51.7M-parameter model (hidden 512, 16
// layers) for one bf16 step under every strategy, and with activation checkpointing under DDP
// and ZeRO-3 (the planner's activation term under checkpointing does not depend on the strategy),
// export it and (once) evaluate it. Every rank's measured peak in every phase (tensor bytes
// above what was live before the model) is within 10 % of the plan the trainer reports, which
// is the plan `sft train --dry-run` prints for the same run; and a ZeRO-3 rank never holds more
// than half the training state, its bf16 copy of the shard, plus two units outside the forward
// and backward.
TEST_F(TwoRanks, ThePlannersPhasesAreWithinTenPercentOfEveryRanksMeasuredPeak) {
  const std::vector<std::string> model = {
      "train.precision=bf16", "model.config.hidden_size=512", "model.config.intermediate_size=1376",
      "model.config.num_hidden_layers=16", "model.config.num_attention_heads=8",
      "model.config.num_key_value_heads=8", "train.batch_size=1", "train.grad_accum=1", "train.max_steps=1",
      "model.save_dtype=bf16",
      // A batch decoding to the full context (512 = max_position_embeddings), as the plan assumes.
      "eval.max_new_tokens=512", "eval.batch_size=2", "eval.benchmarks=[{name: math, limit: 4}]"};
  for (const char* strategy : {"ddp", "zero1", "zero2", "zero3"}) {
    for (bool ckpt : {false, true}) {
      if (ckpt && (std::string(strategy) == "zero1" || std::string(strategy) == "zero2")) continue;
      SCOPED_TRACE(std::string(strategy) + (ckpt ? " with" : " without") + " checkpointing");
      test::TempDir d;
      auto extra = model;
      extra.push_back(std::string("dist.strategy=") + strategy);
      extra.push_back(std::string("train.activation_checkpointing=") + (ckpt ? "true" : "false"));
      // Evaluation gives the training state back first, so one strategy measures it for all.
      const bool eval = std::string(strategy) == "zero3" && ckpt;
      extra.push_back(std::string("eval.at_end=") + (eval ? "true" : "false"));
      launch(2, args(d.file("run"), dir_->file("cache"), extra));
      nlohmann::json memory, build;
      std::istringstream in(test::read(d.file("run/metrics.jsonl")));
      for (std::string line; std::getline(in, line);) {
        auto j = nlohmann::json::parse(line);
        if (j["event"] == "memory") memory = j;
        if (j["event"] == "build") build = j;
      }
      ASSERT_TRUE(memory.is_object() && build.is_object()) << test::read(d.file("run/metrics.jsonl"));
      const auto& plan = memory["planned"];
      ASSERT_EQ(memory["measured"].size(), 2u);
      std::vector<std::string> phases = {"load", "forward_backward", "optimizer", "export"};
      if (eval) phases.push_back("eval");
      for (int rank = 0; rank < 2; ++rank)
        for (const auto& phase : phases) {
          const double planned = plan.at(phase).get<double>();
          const double measured = memory["measured"][rank].at(phase).get<double>();
          EXPECT_NEAR(measured / planned, 1.0, 0.10)
              << "rank " << rank << ", " << phase << ": planned " << planned / 1048576 << " MiB, measured "
              << measured / 1048576 << " MiB";
        }
      if (std::string(strategy) == "zero3") {
        // Half of 16 bytes per parameter, its bf16 copy for the gathers (2 bytes per parameter,
        // halved; not yet at load), plus two of the largest unit (a layer) in fp32, plus the
        // rope tables every forward builds (cos and sin: 2 x 512 x 64 fp32) and 1 MiB of
        // bookkeeping (observed: 13 KB).
        const double n = build["parameters"].get<double>();
        const double unit = 4.0 * (2 * 512 + 4 * 512 * 512 + 3 * 512 * 1376), rope = 2 * 512 * 64 * 4;
        for (int rank = 0; rank < 2; ++rank)
          for (const char* phase : {"load", "optimizer", "export"}) {
            const double copy = std::string(phase) == "load" ? 0.0 : 2.0 * n / 2;
            EXPECT_LT(memory["measured"][rank][phase].get<double>(),
                      16.0 * n / 2 + copy + 2 * unit + rope + 1048576)
                << "rank " << rank << ", " << phase;
          }
      }
      if (std::string(strategy) == "zero1" && !ckpt) {
        // The dry run plans the same (a launcher's world size: 2).
        auto a = args(d.file("dry"), dir_->file("cache"), extra);
        a.insert(a.begin() + 1, "--dry-run");
        a.insert(a.begin() + 2, "--json");
        auto r = test::run_sft(a, {{"WORLD_SIZE", "2"}});
        ASSERT_EQ(r.exit_code, 0) << r.err;
        auto dry = nlohmann::json::parse(r.out);
        for (const auto& phase : phases)
          EXPECT_NEAR(dry["memory_per_rank"]["phases_gib"][phase].get<double>() * 1073741824.0,
                      plan[phase].get<double>(), 1024.0)
              << phase;
      }
    }
  }
}

// Evaluation after a 2-rank run: both ranks generate (batches round-robin), rank 0 scores:
// the same samples and scores as one process evaluating the same (bit-identical DDP) model.
TEST_F(TwoRanks, EvaluationSharedByTwoRanksGivesOneProcesssResults) {
  test::TempDir d;
  const std::vector<std::string> eval = {
      "train.max_steps=4", "train.batch_size=4",
      "eval.at_end=true",  "eval.max_new_tokens=12",
      "eval.batch_size=2", "eval.benchmarks=[{name: math, limit: 6}, {name: general, limit: 4}]"};
  auto one = eval, two = eval;
  one.push_back("train.grad_accum=2");
  auto r = test::run_sft(args(d.file("single"), dir_->file("cache"), one));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  launch(2, args(d.file("run"), dir_->file("cache"), two));
  for (const char* b : {"math", "general"}) {
    auto a = nlohmann::json::parse(test::read(d.file(std::string("single/eval/") + b + ".json")));
    auto c = nlohmann::json::parse(test::read(d.file(std::string("run/eval/") + b + ".json")));
    EXPECT_EQ(a["summary"]["score"], c["summary"]["score"]) << b;
    ASSERT_EQ(a["samples"].size(), c["samples"].size()) << b;
    EXPECT_GE(a["samples"].size(), 4u);
    EXPECT_EQ(a["samples"].dump(), c["samples"].dump()) << b << ": every generated answer the same";
  }
}

TEST_F(TwoRanks, TorchrunOfTheSameTorchLaunchesTwoRanks) {
  SFT_REQUIRE_PYTHON();
  const std::string torchrun = test::venv_program("torchrun");
  ASSERT_TRUE(fs::exists(torchrun)) << torchrun << " is missing: rerun scripts/setup.sh";
  test::TempDir d;
  std::vector<std::string> argv = {torchrun, "--standalone", "--nproc_per_node=2", "--monitor_interval",
                                   "0.5",    "--no-python",  test::sft_binary()};
  auto a = args(d.file("run"), dir_->file("cache"),
                {"train.batch_size=4", "train.grad_accum=1", "train.max_steps=4"});
  argv.insert(argv.end(), a.begin(), a.end());
  auto r = test::run_program(argv, {}, 600);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_LT(test::max_weight_diff(dir_->file("single/final"), d.file("run/final")), kTolerance);
}

// One process with dist.backend named explicitly runs its collectives through a real
// one-rank group (how scripts/gpu_check.sh exercises NCCL on a single GPU) and trains
// exactly what the group-less process trains.
TEST_F(TwoRanks, AOneRankGroupTrainsLikeNoGroup) {
  test::TempDir d;
  auto r = test::run_sft(
      args(d.file("run"), dir_->file("cache"),
           {"train.batch_size=4", "train.grad_accum=2", "train.max_steps=4", "dist.backend=gloo"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("dist: rank 0/1 (local 0), gloo backend"), std::string::npos) << r.err;
  EXPECT_EQ(test::max_weight_diff(dir_->file("single/final"), d.file("run/final")), 0.0);
}

// Two ranks train; once training is under way rank 1 gets `signal`. Returns rank 0's exit
// code, the seconds it took to exit after the signal, and its stderr.
struct Disruption {
  int code = -1;
  double waited = 0;
  std::string err;
};
Disruption disrupt_rank_1(const std::string& out, const std::string& cache, int signal, int timeout_s) {
  std::vector<test::Process> ps;
  launch(2,
         args(out, cache,
              {"train.batch_size=4", "dist.timeout_s=" + std::to_string(timeout_s), "train.log_every=1"}),
         &ps);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline && !fs::exists(out + "/metrics.jsonl"))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ::kill(ps[1].pid, signal);
  auto sent = std::chrono::steady_clock::now();
  Disruption d;
  d.code = test::wait_process(ps[0], 120);
  d.waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count();
  ::kill(ps[1].pid, SIGKILL);  // a stopped rank 1 still lives
  test::wait_process(ps[1], 10);
  d.err = test::read(ps[0].err_path);
  return d;
}

TEST_F(TwoRanks, ARankThatDiesMakesTheOtherFailWithinTheTimeout) {
  test::TempDir d;
  Disruption r = disrupt_rank_1(d.file("run"), dir_->file("cache"), SIGKILL, 20);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.code, 124) << "rank 0 hung";
  EXPECT_LT(r.waited, 60.0);
  EXPECT_NE(r.err.find("rank 0 of 2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(" failed after "), std::string::npos) << r.err;
  // In sft's words, not the backend's (issue 33): no Gloo source paths or internals.
  for (const char* internal : {"gloo/", ".cc:", "[../"})
    EXPECT_EQ(r.err.find(internal), std::string::npos) << r.err;
}

TEST_F(TwoRanks, AStalledRankMakesTheOtherFailWithinTheTimeoutNamingTheCollective) {
  test::TempDir d;
  // SIGSTOP: rank 1 is alive but silent (a hung collective, not a closed socket).
  Disruption r = disrupt_rank_1(d.file("run"), dir_->file("cache"), SIGSTOP, 8);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.code, 124) << "rank 0 hung";
  EXPECT_LT(r.waited, 8.0 + 20.0) << "dist.timeout_s is 8";
  EXPECT_NE(r.err.find("rank 0 of 2"), std::string::npos) << r.err;
  bool named = false;
  for (const char* c : {"all-reduce failed", "broadcast failed", "barrier failed", "all-gather failed",
                        "reduce-scatter failed"})
    named = named || r.err.find(c) != std::string::npos;
  EXPECT_TRUE(named) << r.err;
  EXPECT_NE(r.err.find("dist.timeout_s (8 s per wait)"), std::string::npos) << r.err;
  for (const char* internal : {"gloo/", ".cc:", "[../"})
    EXPECT_EQ(r.err.find(internal), std::string::npos) << r.err;
}

TEST_F(TwoRanks, ShardedCheckpointsResumeExactly) {
  test::TempDir full, cut;
  auto base = std::vector<std::string>{"train.batch_size=4", "dist.strategy=zero3", "train.save_every=3",
                                       "train.log_every=1"};
  launch(2, args(full.file("run"), dir_->file("cache"), base));
  ASSERT_TRUE(fs::exists(full.file("run/final/model.safetensors")));
  // Same run, both ranks killed once step 7 is logged, then resumed.
  std::vector<test::Process> ps;
  auto a = args(cut.file("run"), dir_->file("cache"), base);
  launch(2, a, &ps);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (std::chrono::steady_clock::now() < deadline && test::process_running(ps[0])) {
    std::string m =
        fs::exists(cut.file("run/metrics.jsonl")) ? test::read(cut.file("run/metrics.jsonl")) : "";
    if (m.find("\"step\":7,") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (auto& p : ps) ::kill(p.pid, SIGKILL);
  for (auto& p : ps) test::wait_process(p, 30);
  auto files = fs::list_dir(cut.file("run/checkpoints"));
  ASSERT_FALSE(files.empty());
  auto resume = a;
  resume.push_back("--resume");
  resume.push_back("auto");
  launch(2, resume);
  EXPECT_EQ(test::max_weight_diff(full.file("run/final"), cut.file("run/final")), 0.0);
  // Each rank wrote its own shard.
  auto ck = cut.file("run/checkpoints/") + fs::list_dir(cut.file("run/checkpoints")).back();
  EXPECT_TRUE(fs::exists(ck + "/rank0.safetensors"));
  EXPECT_TRUE(fs::exists(ck + "/rank1.safetensors"));
}

// Ranks launched with plain environment variables, each with its own extra --set values
// (a launch line with a typo on one node); returns each rank's exit code and stderr.
struct RankOutcome {
  int code = -1;
  std::string err;
  double secs = 0;
};
std::vector<RankOutcome> launch_each(int world, const std::vector<std::vector<std::string>>& sets,
                                     const std::string& out, const std::string& cache, int timeout_s) {
  const int port = test::free_port();
  std::vector<test::Process> ps;
  const auto start = std::chrono::steady_clock::now();
  for (std::size_t r = 0; r < sets.size(); ++r) {
    auto extra = sets[r];
    extra.push_back("dist.timeout_s=" + std::to_string(timeout_s));
    ps.push_back(test::spawn_sft(args(out, cache, extra), test::rank_env(static_cast<int>(r), world, port)));
  }
  std::vector<RankOutcome> outcomes;
  for (auto& p : ps) {
    RankOutcome o;
    o.code = test::wait_process(p, 120);
    o.secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    o.err = test::read(p.err_path);
    outcomes.push_back(o);
  }
  return outcomes;
}

// Another lr, another data fraction, another model shape on rank 1: every rank fails at
// rendezvous (exit 2, not a Gloo abort after the run) naming the key and both values, and
// nothing is trained or written.
TEST(RankAgreement, ARankThatRunsSomethingElseFailsEveryRankNamingTheKey) {
  test::TempDir d;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"train.lr=0.01", "train.lr: rank 0 has 0.002, rank 1 has 0.01"},
      {"datasets.math.fraction=1/8", "datasets.math.fraction: rank 0 has 0.0625, rank 1 has 0.125"},
      {"model.config.hidden_size=96", "model.config.hidden_size: rank 0 has 128, rank 1 has 96"},
  };
  for (const auto& [set, message] : cases) {
    const std::string out = d.file("run_" + std::to_string(&set - &cases[0].first));
    auto o = launch_each(2, {{}, {set}}, out, d.file("cache"), 30);
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(o[r].code, 2) << set << ", rank " << r << ":\n" << o[r].err;
      EXPECT_NE(
          o[r].err.find("rank " + std::to_string(r) + " of 2: the ranks disagree on the run configuration: "),
          std::string::npos)
          << o[r].err;
      EXPECT_NE(o[r].err.find(message), std::string::npos) << set << ", rank " << r << ":\n" << o[r].err;
      EXPECT_LT(o[r].secs, 25.0) << "at rendezvous, not after a timeout";
    }
    EXPECT_FALSE(fs::exists(out + "/config.resolved.json")) << set;
    EXPECT_FALSE(fs::exists(out + "/metrics.jsonl")) << set;
  }
}

// A global batch in rows that this world size cannot keep stops every rank at once (not rank
// 0 with the others waiting out the timeout at the next barrier).
TEST(RankAgreement, ARowsBatchTheWorldSizeCannotKeepStopsEveryRank) {
  test::TempDir d;
  const std::vector<std::string> sets = {"train.rows_per_step=12", "train.batch_size=4",
                                         "train.grad_accum=1"};
  auto o = launch_each(2, {sets, sets}, d.file("run"), d.file("cache"), 60);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(o[r].code, 2) << o[r].err;
    EXPECT_NE(o[r].err.find("train.rows_per_step: 12 rows per optimizer step cannot be kept on 2 ranks"),
              std::string::npos)
        << o[r].err;
    EXPECT_LT(o[r].secs, 30.0) << "not after dist.timeout_s (60 s)";
  }
}

// Rank 0 alone (its peer never started) waits dist.timeout_s, as the others would, and says
// how many ranks arrived, where, and what to check.
TEST(RankAgreement, ALoneRankZeroFailsWithinTheTimeoutSayingWhoArrived) {
  test::TempDir d;
  auto o = launch_each(2, {{}}, d.file("run"), d.file("cache"), 5);
  ASSERT_EQ(o.size(), 1u);
  EXPECT_EQ(o[0].code, 1) << o[0].err;
  EXPECT_GE(o[0].secs, 5.0);
  EXPECT_LT(o[0].secs, 5.0 + 5.0) << o[0].err;
  EXPECT_NE(o[0].err.find("rank 0 of 2: rendezvous at 127.0.0.1:"), std::string::npos) << o[0].err;
  EXPECT_NE(o[0].err.find(": 1 of 2 ranks arrived within 5 s (dist.timeout_s)"), std::string::npos)
      << o[0].err;
  EXPECT_NE(o[0].err.find("WORLD_SIZE=2"), std::string::npos) << o[0].err;
}

TEST(Launch, ReadsTorchrunAndSlurmEnvironments) {
  EXPECT_EQ(dist::first_host("node[01-04,07],gpu5"), "node01");
  EXPECT_EQ(dist::first_host("a1,a2"), "a1");
  EXPECT_EQ(dist::first_host("gpu-[3-5]"), "gpu-3");
  EXPECT_EQ(dist::first_host("solo"), "solo");
  // Every variable this test touches is restored when it ends, however it ends.
  struct ScopedEnv {
    std::vector<std::pair<std::string, std::optional<std::string>>> saved;
    explicit ScopedEnv(std::initializer_list<const char*> keys) {
      for (const char* k : keys) {
        const char* v = std::getenv(k);
        saved.push_back({k, v ? std::optional<std::string>(v) : std::nullopt});
        ::unsetenv(k);
      }
    }
    ~ScopedEnv() {
      for (const auto& [k, v] : saved)
        v ? (void)::setenv(k.c_str(), v->c_str(), 1) : (void)::unsetenv(k.c_str());
    }
  } env({"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_NODELIST", "SLURM_JOB_ID", "RANK",
         "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE", "LOCAL_RANK"});
  EXPECT_EQ(dist::detect_launch().world, 1);
  ::setenv("SLURM_PROCID", "3", 1);
  ::setenv("SLURM_NTASKS", "8", 1);
  ::setenv("SLURM_LOCALID", "1", 1);
  ::setenv("SLURM_JOB_NODELIST", "gpu[12-13]", 1);
  ::setenv("SLURM_JOB_ID", "123456", 1);
  auto s = dist::detect_launch();
  EXPECT_EQ(s.launcher, dist::Launcher::kSlurm);
  EXPECT_EQ(s.rank, 3);
  EXPECT_EQ(s.world, 8);
  EXPECT_EQ(s.local_rank, 1);
  EXPECT_EQ(s.master_addr, "gpu12");
  EXPECT_EQ(s.master_port, 20000 + 123456 % 20000);
  // torchrun's variables win over Slurm's.
  ::setenv("RANK", "1", 1);
  ::setenv("WORLD_SIZE", "2", 1);
  ::setenv("MASTER_ADDR", "10.0.0.1", 1);
  ::setenv("MASTER_PORT", "29555", 1);
  ::setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);
  auto t = dist::detect_launch();
  EXPECT_EQ(t.rank, 1);
  EXPECT_EQ(t.world, 2);
  EXPECT_EQ(t.master_addr, "10.0.0.1");
  EXPECT_EQ(t.master_port, 29555);
  EXPECT_TRUE(t.agent_store);
}

}  // namespace
}  // namespace sft
