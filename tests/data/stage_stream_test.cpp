// Data selection and streams: nested fractions and replay, rank sharding, packing attention masks,
// determinism and O(1) resume.
#include "sft/data/stage_stream.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <set>

#include "sft/config/run_config.h"
#include "sft/data/batch.h"
#include "sft/data/run_data.h"
#include "sft/util/error.h"
#include "test_util.h"

namespace sft::data {
namespace {

config::RunConfig tiny_config(const std::string& cache, std::vector<std::string> extra = {}) {
  std::vector<std::string> sets = {
      "tokenizer=" + test::tiny("tokenizer.model"), "datasets.math.path=" + test::tiny("math_train.jsonl"),
      "datasets.code.path=" + test::tiny("code_train.json"),
      "datasets.general.path=" + test::tiny("general_train.json"), "data.cache_dir=" + cache};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return config::load_run_config(test::source_dir() + "/configs/tiny/dmt.yaml", sets);
}

std::set<std::int64_t> selected(const DataPlan& plan, std::size_t stage, const std::string& ds, bool replay) {
  for (const auto& s : plan.stages[stage].sources)
    if (s.dataset_name() == ds && s.replay() == replay) {
      auto v = plan.records_of(s);
      return {v.begin(), v.end()};
    }
  return {};
}

TEST(Strategy, FractionsAreNestedAcrossFiveFractions) {
  test::TempDir d;
  const char* fractions[] = {"1", "1/4", "1/16", "1/64", "1/256"};
  std::vector<std::set<std::int64_t>> sets;
  for (const char* f : fractions) {
    auto cfg = tiny_config(d.path(), {std::string("datasets.math.fraction=") + f});
    auto plan = data::plan_without_tokenizing(cfg);
    sets.push_back(selected(plan, 0, "math", false));
    EXPECT_EQ(static_cast<std::int64_t>(sets.back().size()), fraction_count(*config::parse_fraction(f), 6144))
        << f;
  }
  for (std::size_t i = 1; i < sets.size(); ++i)
    EXPECT_TRUE(std::includes(sets[i - 1].begin(), sets[i - 1].end(), sets[i].begin(), sets[i].end()))
        << fractions[i];
  // Another seed draws another subset.
  const config::RunConfig other_cfg = tiny_config(d.path(), {"datasets.math.fraction=1/16", "seed=2"});
  auto other = data::plan_without_tokenizing(other_cfg);  // points into other_cfg
  EXPECT_NE(selected(other, 0, "math", false), sets[2]);
}

// data.seed moves the data's draw (subsets and order) apart from the initialisation's seed:
// seed 1 with data.seed 2 trains on exactly the samples seed 2 trains on, in the same steps.
TEST(Strategy, DataSeedDrawsTheDataApartFromTheRunSeed) {
  test::TempDir d;
  const config::RunConfig one = tiny_config(d.path(), {"datasets.math.fraction=1/16", "seed=1"});
  const config::RunConfig two = tiny_config(d.path(), {"datasets.math.fraction=1/16", "seed=2"});
  const config::RunConfig mixed =
      tiny_config(d.path(), {"datasets.math.fraction=1/16", "seed=1", "data.seed=2"});
  const auto p1 = data::plan_without_tokenizing(one), p2 = data::plan_without_tokenizing(two),
             pm = data::plan_without_tokenizing(mixed);
  EXPECT_NE(selected(p1, 0, "math", false), selected(p2, 0, "math", false));
  EXPECT_EQ(selected(pm, 0, "math", false), selected(p2, 0, "math", false));
  EXPECT_EQ(data::build_run_data(mixed, 1).streams[0]->fingerprint(),
            data::build_run_data(two, 1).streams[0]->fingerprint());
  // Unset, it leaves the run's identity (config JSON) as it was; set, it is part of it.
  EXPECT_FALSE(one.to_json()["data"].contains("seed"));
  EXPECT_EQ(mixed.to_json()["data"]["seed"], 2);
}

TEST(Strategy, ReplayIsNestedAndDrawnFromStageOneData) {
  test::TempDir d;
  const char* ks[] = {"1", "1/4", "1/16", "1/64", "1/256"};
  std::vector<std::set<std::int64_t>> replays;
  for (const char* k : ks) {
    auto cfg = tiny_config(d.path(), {std::string("strategy.k=") + k, "datasets.code.fraction=1/2"});
    auto plan = data::plan_without_tokenizing(cfg);
    auto stage1 = selected(plan, 0, "code", false);
    auto replay = selected(plan, 1, "code", true);
    EXPECT_EQ(static_cast<std::int64_t>(replay.size()), fraction_count(*config::parse_fraction(k), 2048))
        << k;
    EXPECT_TRUE(std::includes(stage1.begin(), stage1.end(), replay.begin(), replay.end())) << k;
    replays.push_back(replay);
  }
  for (std::size_t i = 1; i < replays.size(); ++i)
    EXPECT_TRUE(
        std::includes(replays[i - 1].begin(), replays[i - 1].end(), replays[i].begin(), replays[i].end()));
}

TEST(Strategy, ADatasetTooSmallForItsFractionIsAConfigError) {
  test::TempDir d;
  auto cfg = tiny_config(d.path(), {"datasets.general.fraction=1/8192"});
  try {
    data::plan_without_tokenizing(cfg);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("datasets.general.fraction"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("selects none"), std::string::npos) << e.what();
  }
}

class Streams : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    cfg_ = new config::RunConfig(tiny_config(
        dir_->path(),
        {"datasets.math.fraction=1/8", "datasets.code.fraction=1/8", "datasets.general.fraction=1/4",
         "train.batch_size=3", "train.grad_accum=2", "strategy.stage_overrides.specialised.epochs=2"}));
  }
  static void TearDownTestSuite() {
    delete cfg_;
    delete dir_;
  }
  static test::TempDir* dir_;
  static config::RunConfig* cfg_;
};
test::TempDir* Streams::dir_ = nullptr;
config::RunConfig* Streams::cfg_ = nullptr;

TEST_F(Streams, RanksNeverOverlapAndTogetherCoverTheStage) {
  for (int world : {1, 2, 3}) {
    for (config::Batching batching : {config::Batching::kPack, config::Batching::kPad}) {
      config::RunConfig cfg = *cfg_;
      cfg.data.batching = batching;
      data::RunData rd = data::build_run_data(cfg, world);
      for (std::size_t si = 0; si < rd.streams.size(); ++si) {
        const auto& stream = rd.streams[si];
        std::multiset<std::pair<int, std::int64_t>> seen;
        std::set<const MicroBatch*> batches;
        for (std::int64_t s = 0; s < stream->steps(); ++s)
          for (int r = 0; r < world; ++r)
            for (std::int64_t m = 0; m < cfg.train.grad_accum; ++m)
              if (const MicroBatch* mb = stream->micro_batch(s, r, m)) {
                EXPECT_TRUE(batches.insert(mb).second) << "micro-batch served twice";
                for (const auto& row : mb->rows)
                  for (const auto& x : row.samples) seen.insert({x.dataset, x.record});
              }
        EXPECT_EQ(static_cast<std::int64_t>(batches.size()), stream->micro_batches())
            << world << config::name(batching);
        std::multiset<std::pair<int, std::int64_t>> all;
        for (const auto& x : stream->all_samples()) all.insert({x.dataset, x.record});
        EXPECT_EQ(seen, all);
        // Every trainable sample of the stage appears once per epoch.
        EXPECT_EQ(static_cast<std::int64_t>(all.size()), stream->samples_per_epoch() * cfg.stages[si].epochs);
      }
    }
  }
}

// train.samples_per_step: every step takes exactly S samples (an epoch's last step the rest),
// the same samples whatever the batching, dealt over ranks without overlap, in micro-batches
// within the token budget; the step count is a padded trainer's.
TEST_F(Streams, SamplesPerStepPutsTheSameSamplesInEveryStepWhateverTheBatching) {
  constexpr std::int64_t kSamples = 10;
  for (int world : {1, 2}) {
    std::map<std::string, std::vector<std::multiset<std::pair<int, std::int64_t>>>> steps_by_batching;
    for (config::Batching batching :
         {config::Batching::kPack, config::Batching::kPad, config::Batching::kPadMax}) {
      config::RunConfig cfg = *cfg_;
      cfg.data.batching = batching;
      cfg.train.grad_accum = 1;
      cfg.train.samples_per_step = kSamples;
      const std::int64_t budget = cfg.train.batch_size * cfg.data.max_seq_len;
      data::RunData rd = data::build_run_data(cfg, world);
      for (std::size_t si = 0; si < rd.streams.size(); ++si) {
        const auto& stream = *rd.streams[si];
        const std::int64_t n = stream.samples_per_epoch(), epochs = cfg.stages[si].epochs;
        const std::int64_t per_epoch = (n + kSamples - 1) / kSamples;
        ASSERT_EQ(stream.steps(), epochs * per_epoch) << config::name(batching) << " stage " << si;
        std::int64_t served = 0;
        for (std::int64_t s = 0; s < stream.steps(); ++s) {
          std::multiset<std::pair<int, std::int64_t>> step;
          std::int64_t trained_tokens = 0, busiest = 0;
          for (int r = 0; r < world; ++r) {
            std::int64_t mine = 0;
            for (std::int64_t m = 0; m < stream.accumulation(s); ++m)
              if (const MicroBatch* mb = stream.micro_batch(s, r, m)) {
                ++mine;
                ++served;
                EXPECT_TRUE(mb->rows.size() == 1 ||
                            mb->width * static_cast<std::int64_t>(mb->rows.size()) <= budget)
                    << config::name(batching) << ": " << mb->rows.size() << " rows of " << mb->width;
                for (const auto& row : mb->rows) {
                  EXPECT_LE(row.tokens, mb->width);
                  for (const auto& x : row.samples) step.insert({x.dataset, x.record});
                }
                trained_tokens += mb->trained_tokens;
              }
            busiest = std::max(busiest, mine);
          }
          EXPECT_EQ(busiest, stream.accumulation(s)) << "A_s is the busiest rank's micro-batch count";
          const std::int64_t expected =
              (s % per_epoch) + 1 < per_epoch ? kSamples : n - (per_epoch - 1) * kSamples;
          EXPECT_EQ(static_cast<std::int64_t>(step.size()), expected)
              << config::name(batching) << " step " << s;
          EXPECT_EQ(stream.step_samples(s), expected);
          EXPECT_EQ(stream.step_trained_tokens(s), trained_tokens);
          steps_by_batching[config::name(batching)].push_back(step);
        }
        EXPECT_EQ(served, stream.micro_batches());
      }
    }
    EXPECT_EQ(steps_by_batching["pack"], steps_by_batching["pad"]) << world << " ranks";
    EXPECT_EQ(steps_by_batching["pack"], steps_by_batching["pad_max"]) << world << " ranks";
  }
}

TEST(RunConfigBatch, SamplesPerStepExcludesGradAccumAndTheBudgetNeedsIt) {
  auto err = [](std::vector<std::string> sets) {
    try {
      tiny_config(test::TempDir().path(), std::move(sets));
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err({"train.samples_per_step=128", "train.grad_accum=4"})
                .find("train.samples_per_step: exclusive with train.grad_accum"),
            std::string::npos);
  EXPECT_NE(err({"train.tokens_per_micro_batch=4096"})
                .find("train.tokens_per_micro_batch: only applies with train.samples_per_step"),
            std::string::npos);
  EXPECT_EQ(err({"train.samples_per_step=128", "train.tokens_per_micro_batch=4096"}), "");
  // Issue 33: a budget below a sample's length was accepted and trained over budget.
  EXPECT_NE(err({"train.samples_per_step=128", "train.tokens_per_micro_batch=1"})
                .find("train.tokens_per_micro_batch: 1 is below data.max_seq_len (512)"),
            std::string::npos);
  EXPECT_EQ(err({"train.samples_per_step=128", "train.tokens_per_micro_batch=512"}), "");
  EXPECT_NE(err({"train.rows_per_step=64", "train.samples_per_step=128"})
                .find("train.rows_per_step: exclusive with train.samples_per_step"),
            std::string::npos);
  EXPECT_NE(err({"train.rows_per_step=64", "train.grad_accum=2"})
                .find("train.rows_per_step: exclusive with train.grad_accum"),
            std::string::npos);
  EXPECT_NE(
      err({"train.rows_per_step=60", "train.batch_size=8"}).find("is not a multiple of train.batch_size"),
      std::string::npos);
}

// rows_per_step keeps the global batch on any world size that divides it: the accumulation
// is derived, and a world size that cannot keep it is refused, saying why.
TEST(RunConfigBatch, RowsPerStepKeepsTheGlobalBatchOnAnyWorldSize) {
  test::TempDir d;
  config::RunConfig cfg = tiny_config(d.path(), {"train.rows_per_step=48", "train.batch_size=4"});
  EXPECT_EQ(data::rows_accumulation(cfg, 1), 12);
  EXPECT_EQ(data::rows_accumulation(cfg, 4), 3);
  EXPECT_EQ(data::rows_accumulation(cfg, 12), 1);
  try {
    data::rows_accumulation(cfg, 5);
    ADD_FAILURE() << "5 ranks cannot keep 48 rows of 4";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "train.rows_per_step: 48 rows per optimizer step cannot be kept on 5 ranks"),
              std::string::npos)
        << e.what();
  }
  EXPECT_NE(data::describe_global_batch(cfg, 4).find(
                "48 rows per optimizer step = 4 rows x 3 micro-batches x 4 rank(s)"),
            std::string::npos);
  // Without it, the batch follows the world size, and a config sized for more GPUs says so.
  config::RunConfig rows =
      tiny_config(d.path(), {"train.batch_size=4", "train.grad_accum=2", "dist.gpus=16"});
  EXPECT_NE(data::describe_global_batch(rows, 8).find("NOTE: on dist.gpus 16 ranks it would be 128 rows"),
            std::string::npos);
}

TEST_F(Streams, RepeatUpsamplesADatasetWhereverItIsTrained) {
  config::RunConfig once = *cfg_;
  config::RunConfig thrice = *cfg_;
  for (auto& d : thrice.datasets)
    if (d.name == "general") d.repeat = 3;
  data::RunData a = data::build_run_data(once, 1), b = data::build_run_data(thrice, 1);
  // Stage 2 of DMT: every general record three times per epoch, the replay untouched.
  std::map<std::pair<int, std::int64_t>, int> count_a, count_b;
  for (const auto& x : a.streams[1]->all_samples()) ++count_a[{x.dataset, x.record}];
  for (const auto& x : b.streams[1]->all_samples()) ++count_b[{x.dataset, x.record}];
  ASSERT_EQ(count_a.size(), count_b.size()) << "the same records, only more often";
  const int general = 2;  // index of datasets.general in the tiny config
  int upsampled = 0;
  for (const auto& [key, n] : count_b) {
    EXPECT_EQ(n, count_a.at(key) * (key.first == general ? 3 : 1));
    upsampled += key.first == general;
  }
  EXPECT_GT(upsampled, 0);
  // Stage 1 has no general data and is unchanged.
  EXPECT_EQ(a.streams[0]->fingerprint(), b.streams[0]->fingerprint());
  EXPECT_EQ(b.plan.stages[1].samples - a.plan.stages[1].samples, 2 * static_cast<std::int64_t>(upsampled));
}

TEST_F(Streams, PackedSamplesNeverAttendToEachOther) {
  data::RunData rd = data::build_run_data(*cfg_, 1);
  const auto& stream = *rd.streams[0];
  int checked_rows = 0;
  for (std::int64_t s = 0; s < std::min<std::int64_t>(stream.steps(), 6); ++s) {
    for (std::int64_t m = 0; m < cfg_->train.grad_accum; ++m) {
      const MicroBatch* mb = stream.micro_batch(s, 0, m);
      if (!mb) continue;
      Batch b = make_batch(*mb, rd.datasets, 0, /*with_attention_mask=*/true);
      ASSERT_TRUE(b.attention_mask.defined());
      ASSERT_TRUE(b.segment_ids.defined());
      const std::int64_t B = b.input_ids.size(0), T = b.input_ids.size(1);
      auto pos = b.position_ids.accessor<std::int64_t, 2>();
      auto lab = b.labels.accessor<std::int64_t, 2>();
      auto mask = b.attention_mask.accessor<bool, 4>();
      for (std::int64_t r = 0; r < B; ++r) {
        // Sample id of each position from the restarting positions.
        std::vector<int> seg(static_cast<std::size_t>(T), -1);
        int cur = -1;
        std::int64_t used = mb->rows[static_cast<std::size_t>(r)].tokens;
        for (std::int64_t t = 0; t < used; ++t) {
          if (pos[r][t] == 0) ++cur;
          seg[static_cast<std::size_t>(t)] = cur;
        }
        EXPECT_EQ(cur + 1, static_cast<int>(mb->rows[static_cast<std::size_t>(r)].samples.size()));
        for (std::int64_t q = 0; q < T; ++q) {
          for (std::int64_t k = 0; k < T; ++k) {
            if (!mask[r][0][q][k]) continue;
            if (seg[static_cast<std::size_t>(q)] < 0) {
              EXPECT_EQ(k, q) << "a pad attends only to itself";
            } else {
              EXPECT_EQ(seg[static_cast<std::size_t>(k)], seg[static_cast<std::size_t>(q)])
                  << "cross-sample attention";
              EXPECT_LE(k, q) << "attention to the future";
            }
          }
          // The last token of a sample predicts nothing (never the next sample's first token).
          if (q + 1 < used && seg[static_cast<std::size_t>(q)] != seg[static_cast<std::size_t>(q + 1)])
            EXPECT_EQ(lab[r][q], kIgnoreIndex);
        }
        ++checked_rows;
      }
      std::int64_t trained_tokens = (b.labels != kIgnoreIndex).sum().item<std::int64_t>();
      EXPECT_EQ(trained_tokens, mb->trained_tokens);
      EXPECT_EQ(b.trained_tokens, mb->trained_tokens);
    }
  }
  EXPECT_GT(checked_rows, 10);
}

TEST_F(Streams, StepTargetsSumTheMicroBatchesOfTheStep) {
  data::RunData rd = data::build_run_data(*cfg_, 2);
  const auto& stream = *rd.streams[0];
  for (std::int64_t s = 0; s < stream.steps(); ++s) {
    std::int64_t sum = 0;
    for (int r = 0; r < 2; ++r)
      for (std::int64_t m = 0; m < 2; ++m)
        if (auto* mb = stream.micro_batch(s, r, m)) sum += mb->trained_tokens;
    EXPECT_EQ(sum, stream.step_trained_tokens(s));
  }
}

// The samples of steps [from, from + n) in the order the trainer takes them.
std::vector<std::pair<int, std::int64_t>> samples_of_steps(const StageStream& st, std::int64_t from,
                                                           std::int64_t n, int world, std::int64_t accum) {
  std::vector<std::pair<int, std::int64_t>> out;
  for (std::int64_t s = from; s < std::min(st.steps(), from + n); ++s)
    for (int r = 0; r < world; ++r)
      for (std::int64_t m = 0; m < accum; ++m)
        if (auto* mb = st.micro_batch(s, r, m))
          for (const auto& row : mb->rows)
            for (const auto& x : row.samples) out.push_back({x.dataset, x.record});
  return out;
}

// A resume rebuilds the stream in a new process and indexes straight into the step its
// checkpoint stored: it must continue exactly where the uninterrupted run would have.
TEST_F(Streams, AStreamRebuiltAtAStoredStepContinuesTheUninterruptedRun) {
  data::RunData a = data::build_run_data(*cfg_, 1);
  const std::int64_t stored = 7;  // a checkpoint after 7 steps of stage 1
  ASSERT_GT(a.streams[0]->steps(), stored + 10);
  auto whole = samples_of_steps(*a.streams[0], 0, stored + 10, 1, 2);
  const std::size_t done = samples_of_steps(*a.streams[0], 0, stored, 1, 2).size();
  std::vector<std::pair<int, std::int64_t>> rest(whole.begin() + static_cast<std::ptrdiff_t>(done),
                                                 whole.end());
  ASSERT_GE(rest.size(), 10u);
  // A new process: everything rebuilt from the config and the (cached) data.
  data::RunData b = data::build_run_data(*cfg_, 1);
  EXPECT_EQ(a.streams[0]->fingerprint(), b.streams[0]->fingerprint());
  EXPECT_EQ(samples_of_steps(*b.streams[0], stored, 10, 1, 2), rest);
  // Another seed shuffles differently, and its fingerprint (which the checkpoint keeps) says so.
  config::RunConfig other = *cfg_;
  other.seed = 99;
  data::RunData c = data::build_run_data(other, 1);
  EXPECT_NE(c.streams[0]->fingerprint(), a.streams[0]->fingerprint());
  EXPECT_NE(samples_of_steps(*c.streams[0], stored, 10, 1, 2), rest);
}

TEST_F(Streams, EpochsReshuffle) {
  data::RunData rd = data::build_run_data(*cfg_, 1);
  auto all = rd.streams[0]->all_samples();
  const std::size_t n = static_cast<std::size_t>(rd.streams[0]->samples_per_epoch());
  ASSERT_EQ(all.size(), 2 * n);
  std::vector<std::pair<int, std::int64_t>> e0, e1;
  for (std::size_t i = 0; i < n; ++i) {
    e0.push_back({all[i].dataset, all[i].record});
    e1.push_back({all[n + i].dataset, all[n + i].record});
  }
  EXPECT_NE(e0, e1);
  std::sort(e0.begin(), e0.end());
  std::sort(e1.begin(), e1.end());
  EXPECT_EQ(e0, e1);
}

TEST_F(Streams, PackingIsFarDenserThanPaddingToMaxLength) {
  config::RunConfig pack = *cfg_, pad_max = *cfg_;
  pad_max.data.batching = config::Batching::kPadMax;
  double e_pack = data::build_run_data(pack, 1).streams[0]->packing_efficiency();
  double e_pad = data::build_run_data(pad_max, 1).streams[0]->packing_efficiency();
  EXPECT_GT(e_pack, 0.9);
  EXPECT_LT(e_pad, 0.4);
}

// train.min_steps: a stage with too few steps gets more epochs (each a full reshuffled pass),
// as many as it needs and no more; a stage that already has them keeps its epochs.
TEST_F(Streams, MinStepsAddsWholeEpochsUntilTheStageHasThem) {
  for (const std::int64_t samples_per_step : {std::int64_t{0}, std::int64_t{4}}) {
    config::RunConfig cfg = *cfg_;
    cfg.train.samples_per_step = samples_per_step;
    if (samples_per_step > 0) cfg.train.grad_accum = 1;
    const data::RunData plain = data::build_run_data(cfg, 1);
    const auto& first = *plain.streams[0];
    const std::int64_t per_epoch = (first.steps() + first.epochs() - 1) / first.epochs();
    const std::int64_t want = first.steps() * 3 + 1;
    for (auto& st : cfg.stages) st.min_steps = want;
    const data::RunData raised = data::build_run_data(cfg, 1);
    for (std::size_t s = 0; s < raised.streams.size(); ++s) {
      const auto& st = *raised.streams[s];
      const auto& before = *plain.streams[s];
      EXPECT_GE(st.steps(), want) << s;
      EXPECT_GT(st.epochs(), before.epochs()) << s;
      // No more epochs than needed (an epoch's step count varies by a step or so with packing).
      EXPECT_LE(st.steps(), want + per_epoch + 2) << s << " mode " << samples_per_step;
      EXPECT_EQ(static_cast<std::int64_t>(st.all_samples().size()), st.samples_per_epoch() * st.epochs());
      // The epochs it had are unchanged: the added ones only follow them.
      const auto a = before.all_samples(), b = st.all_samples();
      EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), [](const SampleRef& x, const SampleRef& y) {
        return x.dataset == y.dataset && x.record == y.record;
      }));
    }
    for (auto& st : cfg.stages) st.min_steps = 1;
    const data::RunData same = data::build_run_data(cfg, 1);
    for (std::size_t s = 0; s < same.streams.size(); ++s) {
      EXPECT_EQ(same.streams[s]->epochs(), cfg.stages[s].epochs);
      EXPECT_EQ(same.streams[s]->fingerprint(), plain.streams[s]->fingerprint());
    }
  }
}

}  // namespace
}  // namespace sft::data
