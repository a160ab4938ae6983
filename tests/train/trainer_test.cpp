// Trainer behaviour: gradient-accumulation invariance, non-finite steps, metrics and
// TensorBoard files, checkpoint retention, and the dry-run planner against a measured run.
#include "sft/train/trainer.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "sft/model/hf_checkpoint.h"
#include "sft/train/checkpoint.h"
#include "sft/train/dry_run.h"
#include "sft/train/tfevents.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft::train {
namespace {

config::RunConfig tiny(const std::string& out, std::vector<std::string> extra = {}) {
  std::vector<std::string> sets = {"output_dir=" + out,
                                   "tokenizer=" + test::tiny("tokenizer.model"),
                                   "datasets.math.path=" + test::tiny("math_train.jsonl"),
                                   "datasets.code.path=" + test::tiny("code_train.json"),
                                   "datasets.general.path=" + test::tiny("general_train.json"),
                                   "data.cache_dir=" + out + "/cache",
                                   "datasets.math.fraction=1/16",
                                   "datasets.code.fraction=1/16",
                                   "datasets.general.fraction=1/8",
                                   "train.threads=1"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return config::load_run_config(test::source_dir() + "/configs/tiny/dmt.yaml", sets);
}

TEST(Trainer, GradientAccumulationSplitsGiveTheSameUpdate) {
  test::TempDir a, b;
  std::vector<std::string> common = {"train.precision=fp32", "train.max_steps=4",
                                     "train.export_stage_models=false"};
  auto ca = common, cb = common;
  ca.insert(ca.end(), {"train.batch_size=8", "train.grad_accum=1"});
  cb.insert(cb.end(), {"train.batch_size=2", "train.grad_accum=4"});
  Trainer ta(tiny(a.path(), ca), {});
  ta.fit();
  Trainer tb(tiny(b.path(), cb), {});
  tb.fit();
  const auto& pa = ta.model().parameters();
  const auto& pb = tb.model().parameters();
  double worst = 0;
  for (std::size_t i = 0; i < pa.size(); ++i)
    worst = std::max(worst, (pa[i].tensor - pb[i].tensor).abs().max().item<double>());
  EXPECT_LT(worst, 2e-5) << "1x8 and 4x2 micro-batching diverged (max |diff| " << worst << ")";
  // ... while both moved away from the initial weights (so the comparison means something).
  model::Llama init(ta.model().config());
  init.init_weights(1);
  double moved = 0;
  for (std::size_t i = 0; i < pa.size(); ++i)
    moved = std::max(moved, (pa[i].tensor - init.parameters()[i].tensor).abs().max().item<double>());
  EXPECT_GT(moved, 1e-3);
}

std::vector<double> step_losses(const std::string& metrics) {
  std::vector<double> out;
  std::istringstream in(test::read(metrics));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j["event"] == "step") out.push_back(j["loss"]);
  }
  return out;
}

// The paper's batch in samples: packed rows and padded rows of the same samples per step
// are the same optimisation. Same samples in every step (the manifest's per-step digests),
// per-step losses and final weights equal to fp32 rounding; the padded run also splits
// its steps into more micro-batches (a smaller token budget), which changes nothing either.
// Packed samples attending to each other would break the equality.
TEST(Trainer, PackingAndPaddingAtTheSameSamplesPerStepTrainTheSameModel) {
  test::TempDir a, b;
  std::vector<std::string> common = {"train.precision=fp32",
                                     "train.samples_per_step=16",
                                     "train.log_every=1",
                                     "train.export_stage_models=false",
                                     "datasets.math.fraction=1/64",
                                     "datasets.code.fraction=1/64",
                                     "datasets.general.fraction=1/64"};
  auto ca = common, cb = common;
  ca.insert(ca.end(), {"data.batching=pack"});
  cb.insert(cb.end(), {"data.batching=pad", "train.tokens_per_micro_batch=1024"});
  Trainer ta(tiny(a.path(), ca), {});
  ta.fit();
  Trainer tb(tiny(b.path(), cb), {});
  tb.fit();
  const auto ma = nlohmann::json::parse(test::read(a.file("data_manifest.json")));
  const auto mb = nlohmann::json::parse(test::read(b.file("data_manifest.json")));
  std::int64_t several = 0;
  for (std::size_t s = 0; s < ma["stages"].size(); ++s) {
    EXPECT_EQ(ma["stages"][s]["step_samples"], mb["stages"][s]["step_samples"]);
    EXPECT_EQ(ma["stages"][s]["step_sample_digests"], mb["stages"][s]["step_sample_digests"]);
    EXPECT_EQ(ma["stages"][s]["step_samples"][0], 16);
    const auto& stream = *tb.data().streams[s];
    for (std::int64_t st = 0; st < stream.steps(); ++st) several += stream.accumulation(st) > 1;
  }
  EXPECT_GT(several, 0) << "the padded run's steps should need several micro-batches";
  const auto la = step_losses(a.file("metrics.jsonl")), lb = step_losses(b.file("metrics.jsonl"));
  ASSERT_EQ(la.size(), lb.size());
  ASSERT_GE(la.size(), 10u);
  for (std::size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(la[i], lb[i], 1e-5) << "step " << i + 1;
  const auto& pa = ta.model().parameters();
  const auto& pb = tb.model().parameters();
  double worst = 0;
  for (std::size_t i = 0; i < pa.size(); ++i)
    worst = std::max(worst, (pa[i].tensor - pb[i].tensor).abs().max().item<double>());
  EXPECT_LT(worst, 1e-5) << "packed and padded training diverged (max |diff| " << worst
                         << "; observed ~1e-6)";
}

TEST(Trainer, NonFiniteStepsAreSkippedCountedAndAbortAfterN) {
  test::TempDir d;
  TrainerOptions inject;
  inject.inject_nonfinite = {2, 3};
  Trainer t(tiny(d.path(), {"train.max_steps=6"}), inject);
  TrainResult r = t.fit();
  EXPECT_EQ(r.skipped_steps, 2);
  EXPECT_EQ(r.steps, 6);
  test::TempDir e;
  inject.inject_nonfinite = {2, 3, 4};
  Trainer t2(tiny(e.path(), {"train.max_steps=6", "train.max_nonfinite_steps=3"}), inject);
  try {
    t2.fit();
    FAIL() << "expected divergence to abort";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("3 consecutive steps with a non-finite loss"), std::string::npos)
        << err.what();
  }
}

TEST(Trainer, WritesMetricsTensorBoardAndKeepsTheLastNCheckpoints) {
  test::TempDir d;
  Trainer t(tiny(d.path(), {"train.save_every=3", "train.keep_checkpoints=2", "train.log_every=2"}), {});
  TrainResult r = t.fit();
  // metrics.jsonl: one line per logged step, stage ends, the end record.
  std::istringstream in(test::read(d.file("metrics.jsonl")));
  std::string line;
  int steps = 0, stage_ends = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j["event"] == "step") {
      ++steps;
      EXPECT_TRUE(j.contains("loss") && j.contains("lr") && j.contains("tokens_per_s") &&
                  j.contains("stage"));
    }
    stage_ends += j["event"] == "stage_end";
  }
  EXPECT_GT(steps, 5);
  EXPECT_EQ(stage_ends, 2);
  // TensorBoard: a valid event file (CRCs checked) with the loss curve.
  auto files = fs::list_dir(d.file("tensorboard"));
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0].rfind("events.out.tfevents.", 0), 0u);
  auto events = read_scalar_events(d.file("tensorboard/" + files[0]));
  int losses = 0;
  for (const auto& e : events) losses += e.tag == "train/loss";
  EXPECT_EQ(losses, steps);
  CheckpointStore store(d.file("checkpoints"));
  EXPECT_EQ(store.list().size(), 2u);
  EXPECT_EQ(store.list()[0].global_step, r.steps);
  EXPECT_GT(r.peak_memory_bytes, 0);
}

TEST(Trainer, Bf16AutocastConvergesOnTheTinyConfig) {
  test::TempDir d;
  Trainer t(tiny(d.path(), {"train.precision=bf16", "datasets.math.fraction=1/8"}), {});
  TrainResult r = t.fit();
  ASSERT_EQ(r.stage_first_loss.size(), 2u);
  EXPECT_LT(r.stage_last_loss[0], 0.6 * r.stage_first_loss[0]);
  EXPECT_LT(r.stage_last_loss[1], r.stage_first_loss[1]);
}

TEST(DryRun, TinyEstimateIsWithinTenPercentOfTheMeasuredPeak) {
  for (bool ckpt : {false, true}) {
    test::TempDir d;
    std::vector<std::string> extra = {
        "train.activation_checkpointing=" + std::string(ckpt ? "true" : "false"),
        "train.export_stage_models=false"};
    auto cfg = tiny(d.path(), extra);
    auto plan = dry_run(cfg, 1);
    double estimate = plan["memory_per_rank"]["total_gib"].get<double>() * 1024 * 1024 * 1024;
    Trainer t(cfg, {});
    double measured = static_cast<double>(t.fit().peak_memory_bytes);
    EXPECT_NEAR(estimate / measured, 1.0, 0.10) << "ckpt=" << ckpt << " estimate " << estimate / 1048576
                                                << " MiB, measured " << measured / 1048576 << " MiB";
  }
}

// The paper's configs count their batch in samples: stage 1 of LLaMA-7B DMT plans
// 3 epochs x ceil(130,164 / 128) steps, as FastChat's padded trainer takes them.
TEST(DryRun, ThePaperConfigsPlanThePapersStepCounts) {
  for (const char* f : {"configs/paper/llama_7b.yaml", "configs/paper/llama_13b.yaml",
                        "configs/paper/llama_33b.yaml", "configs/dmt_33b.yaml"}) {
    auto plan = dry_run(config::load_run_config(test::source_dir() + "/" + f), 1);
    EXPECT_EQ(plan["samples_per_optimizer_step"], 128) << f;
    const auto& s1 = plan["stages"][0];
    const double samples = s1["samples"].get<double>(), steps = s1["steps_estimated"].get<double>();
    EXPECT_NEAR(steps, std::ceil(3 * samples / 128), 0.01 * steps) << f;
    EXPECT_EQ(s1["steps_estimated"], 3051) << f;
  }
}

TEST(DryRun, The33BPlanFitsSixteenA100sOnlyWithZero3) {
  auto cfg = config::load_run_config(test::source_dir() + "/configs/dmt_33b.yaml");
  auto plan = dry_run(cfg, 1);
  EXPECT_EQ(plan["world_size"], 16);
  EXPECT_NEAR(plan["model"]["parameters"].get<double>(), 32.5e9, 0.1e9);
  EXPECT_TRUE(plan["memory_per_rank"]["fits"].get<bool>());
  for (const auto& row : plan["strategies"]) {
    bool fits = row["fits"];
    if (row["strategy"] == "zero3" && row["activation_checkpointing"] == true) EXPECT_TRUE(fits);
    if (row["strategy"] == "ddp") EXPECT_FALSE(fits);  // 16 bytes/param x 32.5B = 520 GB
  }
  // ZeRO-3: weights + grads + optimizer state are 16 bytes/param spread over 16 ranks.
  const auto& m = plan["memory_per_rank"];
  double states =
      m["weights_gib"].get<double>() + m["grads_gib"].get<double>() + m["optimizer_gib"].get<double>();
  EXPECT_NEAR(states, 16 * 32.53e9 / 16 / (1024.0 * 1024 * 1024), 0.5);
  auto text = test::run_sft({"train", "--dry-run", "--config", "configs/dmt_33b.yaml"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("fits 80 GiB"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("LLaMA-65B"), std::string::npos);
}

TEST(TfEvents, Crc32cMatchesTheStandardCheckValue) {
  const char* s = "123456789";
  EXPECT_EQ(crc32c(s, 9), 0xE3069283u);
}

}  // namespace
}  // namespace sft::train
