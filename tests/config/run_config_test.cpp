// Run configuration: YAML schedules, strategy presets, overrides and error reporting.
#include <gtest/gtest.h>

#include "sft/config/run_config.h"
#include "sft/data/run_data.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft::config {
namespace {

std::string tiny_yaml(const std::string& strategy_block, const std::string& extra = "") {
  const std::string d = test::source_dir() + "/data/tiny/";
  return "model:\n  config: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, "
         "num_attention_heads: 2, "
         "vocab_size: 1024}\n"
         "tokenizer: " +
         d +
         "tokenizer.model\n"
         "datasets:\n"
         "  math: {path: " +
         d +
         "math_train.jsonl, format: gsm8k, ability: math}\n"
         "  code: {path: " +
         d +
         "code_train.json, format: alpaca, ability: code}\n"
         "  general: {path: " +
         d + "general_train.json, format: sharegpt, ability: general}\n" + strategy_block + extra;
}

// The ConfigError `f` throws; its message must contain `expected` (any ConfigError would
// otherwise pass for the one the test is about).
template <typename F>
void expect_config_error(F f, const std::string& expected) {
  try {
    f();
    ADD_FAILURE() << "no ConfigError; expected one saying: " << expected;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    EXPECT_EQ(e.exit_code(), 2);
  }
}

// (stage name, [(dataset, samples, replay)]) as planned from the real tiny files.
struct Src {
  std::string dataset;
  std::int64_t samples;
  bool replay;
};
std::vector<std::pair<std::string, std::vector<Src>>> plan_of(const RunConfig& cfg) {
  auto plan = data::plan_without_tokenizing(cfg);
  std::vector<std::pair<std::string, std::vector<Src>>> out;
  for (const auto& st : plan.stages) {
    std::vector<Src> v;
    for (const auto& s : st.sources) v.push_back({s.dataset_name(), s.records, s.replay()});
    out.push_back({st.stage->name, v});
  }
  return out;
}

constexpr std::int64_t kMath = 6144, kCode = 4096, kGeneral = 2048;  // data/tiny train splits

TEST(RunConfig, MultiTaskIsOneStageWithEveryDataset) {
  auto p = plan_of(parse_run_config(tiny_yaml("strategy: multi_task\n"), "t.yaml"));
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].first, "multi_task");
  ASSERT_EQ(p[0].second.size(), 3u);
  EXPECT_EQ(p[0].second[0].samples, kMath);
  EXPECT_EQ(p[0].second[1].samples, kCode);
  EXPECT_EQ(p[0].second[2].samples, kGeneral);
}

TEST(RunConfig, SequentialFollowsTheGivenOrder) {
  auto p = plan_of(
      parse_run_config(tiny_yaml("strategy: {name: sequential, order: [code, math, general]}\n"), "t.yaml"));
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0].first, "code");
  EXPECT_EQ(p[1].first, "math");
  EXPECT_EQ(p[2].first, "general");
  EXPECT_EQ(p[0].second[0].samples, kCode);
  EXPECT_EQ(p[2].second[0].samples, kGeneral);
}

TEST(RunConfig, MixedSequentialSeparatesSpecialisedFromGeneral) {
  auto p = plan_of(parse_run_config(tiny_yaml("strategy: mixed_sequential\n"), "t.yaml"));
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].first, "specialised");
  ASSERT_EQ(p[0].second.size(), 2u);
  EXPECT_EQ(p[1].first, "general");
  ASSERT_EQ(p[1].second.size(), 1u);
  EXPECT_EQ(p[1].second[0].dataset, "general");
}

TEST(RunConfig, DmtReplaysKOfEachSpecialisedDataset) {
  for (const std::string k : {"1/256", "0.00390625", "1/64", "1/4", "1"}) {
    RunConfig cfg = parse_run_config(tiny_yaml("strategy: {name: dmt, k: " + k + "}\n"), "t.yaml");
    double kv = *parse_fraction(k);
    EXPECT_DOUBLE_EQ(cfg.k, kv);
    auto p = plan_of(cfg);
    ASSERT_EQ(p.size(), 2u) << k;
    ASSERT_EQ(p[1].second.size(), 3u) << k;
    EXPECT_EQ(p[1].second[0].samples, kGeneral);
    EXPECT_TRUE(p[1].second[1].replay);
    EXPECT_EQ(p[1].second[1].samples, static_cast<std::int64_t>(std::llround(kv * kMath))) << k;
    EXPECT_EQ(p[1].second[2].samples, static_cast<std::int64_t>(std::llround(kv * kCode))) << k;
  }
}

TEST(RunConfig, DatasetFractionScalesEveryStageThatUsesIt) {
  RunConfig cfg = parse_run_config(tiny_yaml("strategy: {name: dmt, k: 1/4}\n"), "t.yaml",
                                   {"datasets.math.fraction=1/16"});
  auto p = plan_of(cfg);
  EXPECT_EQ(p[0].second[0].samples, kMath / 16);
  EXPECT_EQ(p[1].second[1].samples, kMath / 16 / 4);
}

TEST(RunConfig, ExplicitStagesExpressTheSamePlanAsThePreset) {
  std::string stages =
      "stages:\n"
      "  - name: specialised\n"
      "    sources: {math: 1.0, code: 1.0}\n"
      "  - name: general\n"
      "    sources: {general: 1.0}\n"
      "    replay_fraction: 1/256\n";
  auto explicit_plan = plan_of(parse_run_config(tiny_yaml(stages), "t.yaml"));
  auto preset_plan = plan_of(parse_run_config(tiny_yaml("strategy: {name: dmt, k: 1/256}\n"), "t.yaml"));
  ASSERT_EQ(explicit_plan.size(), preset_plan.size());
  for (std::size_t s = 0; s < preset_plan.size(); ++s) {
    ASSERT_EQ(explicit_plan[s].second.size(), preset_plan[s].second.size());
    for (std::size_t i = 0; i < preset_plan[s].second.size(); ++i) {
      EXPECT_EQ(explicit_plan[s].second[i].dataset, preset_plan[s].second[i].dataset);
      EXPECT_EQ(explicit_plan[s].second[i].samples, preset_plan[s].second[i].samples);
      EXPECT_EQ(explicit_plan[s].second[i].replay, preset_plan[s].second[i].replay);
    }
  }
}

TEST(RunConfig, SetReachesEveryKey) {
  RunConfig cfg = parse_run_config(tiny_yaml("strategy: dmt\n"), "t.yaml",
                                   {"train.lr=1e-4", "datasets.math.path=/x/y.jsonl",
                                    "model.config.hidden_size=48", "strategy=mixed_sequential", "seed=7"});
  EXPECT_DOUBLE_EQ(cfg.train.lr, 1e-4);
  EXPECT_EQ(cfg.dataset("math").path, "/x/y.jsonl");
  EXPECT_EQ(cfg.model.config["hidden_size"], 48);
  EXPECT_EQ(cfg.strategy, Strategy::kMixedSequential);
  EXPECT_EQ(cfg.seed, 7u);
  EXPECT_DOUBLE_EQ(parse_run_config(tiny_yaml("strategy: dmt\n"), "t.yaml", {"strategy.k=1/64"}).k, 1.0 / 64);
  // k belongs to DMT: setting it for another strategy is a mistake worth reporting.
  expect_config_error(
      [] { parse_run_config(tiny_yaml("strategy: multi_task\n"), "t.yaml", {"strategy.k=1/64"}); },
      "strategy.k");
  // Provenance: overridden keys say so, untouched ones are defaults.
  bool lr_seen = false;
  for (const auto& s : cfg.settings) {
    if (s.key == "train.lr") {
      EXPECT_EQ(s.source, "--set");
      lr_seen = true;
    }
    if (s.key == "train.batch_size") EXPECT_EQ(s.source, "default");
  }
  EXPECT_TRUE(lr_seen);
}

TEST(RunConfig, StageOverridesChangeOnlyTheirStage) {
  RunConfig cfg = parse_run_config(
      tiny_yaml("strategy:\n  name: dmt\n  stage_overrides:\n    general: {lr: 1e-5, epochs: 2}\n",
                "train: {lr: 2e-5, epochs: 3}\n"),
      "t.yaml");
  EXPECT_DOUBLE_EQ(cfg.stages[0].lr, 2e-5);
  EXPECT_EQ(cfg.stages[0].epochs, 3);
  EXPECT_DOUBLE_EQ(cfg.stages[1].lr, 1e-5);
  EXPECT_EQ(cfg.stages[1].epochs, 2);
}

TEST(RunConfig, FiveMistakesAreReportedTogetherWithFileLineAndKey) {
  const std::string file = test::source_dir() + "/tests/fixtures/configs/five_mistakes.yaml";
  try {
    load_run_config(file);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("5 problems"), std::string::npos) << m;
    EXPECT_NE(m.find(file + ":8: datasets.code.format: \"alpacca\" is not one of"), std::string::npos) << m;
    EXPECT_NE(m.find(file + ":16: stages[1].sources.math.fraction: 1.5 is outside (0, 1]"), std::string::npos)
        << m;
    EXPECT_NE(m.find(file + ":17: stages[1].epochs: 0 is outside"), std::string::npos) << m;
    EXPECT_NE(m.find(file + ":19: train.lr: \"fast\" is not a number"), std::string::npos) << m;
    EXPECT_NE(m.find(file + ":20: train.batch_sise: unknown key; did you mean \"batch_size\"?"),
              std::string::npos)
        << m;
    EXPECT_EQ(e.exit_code(), 2);
  }
}

TEST(RunConfig, OverrideErrorsNameTheOverride) {
  try {
    parse_run_config(tiny_yaml("strategy: dmt\n"), "t.yaml", {"train.lr=abc"});
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--set train.lr: \"abc\" is not a number"), std::string::npos)
        << e.what();
  }
  expect_config_error([] { parse_run_config(tiny_yaml("strategy: dmt\n"), "t.yaml", {"no_equals_sign"}); },
                      "no_equals_sign");
}

TEST(RunConfig, StrategyAndStagesTogetherIsAnError) {
  expect_config_error(
      [] { parse_run_config(tiny_yaml("strategy: dmt\nstages: [{sources: {math: 1}}]\n"), "t.yaml"); },
      "stages: give either `strategy` (a preset) or `stages` (explicit), not both");
  expect_config_error([] { parse_run_config(tiny_yaml(""), "t.yaml"); },
                      "strategy: missing: a strategy (multi_task, sequential, mixed_sequential, dmt) or "
                      "explicit stages");
}

TEST(RunConfig, DmtNeedsGeneralAndSpecialisedData) {
  std::string yaml = tiny_yaml("strategy: dmt\n");
  expect_config_error([&] { parse_run_config(yaml, "t.yaml", {"datasets.general.ability=chat"}); },
                      "strategy.name: dmt needs at least one dataset with ability: general");
}

TEST(RunConfig, YamlSyntaxErrorsCarryTheLine) {
  try {
    parse_run_config("train:\n  lr: [1,\n", "bad.yaml");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("bad.yaml:", 0), 0u) << e.what();
  }
  expect_config_error([] { parse_run_config("a: 1\na: 2\n", "dup.yaml"); }, "dup.yaml:2");
}

TEST(ParseFraction, AcceptsDecimalsRatiosAndPercentages) {
  EXPECT_DOUBLE_EQ(*parse_fraction("1/256"), 1.0 / 256);
  EXPECT_DOUBLE_EQ(*parse_fraction("0.00390625"), 1.0 / 256);
  EXPECT_DOUBLE_EQ(*parse_fraction("25%"), 0.25);
  EXPECT_FALSE(parse_fraction("1/0"));
  EXPECT_FALSE(parse_fraction("abc"));
  EXPECT_FALSE(parse_fraction(""));
}

TEST(RunConfig, ShippedConfigsLoad) {
  for (const char* f :
       {"configs/tiny/multi_task.yaml", "configs/tiny/sequential.yaml", "configs/tiny/mixed_sequential.yaml",
        "configs/tiny/dmt.yaml", "configs/dmt_33b.yaml"}) {
    EXPECT_NO_THROW(load_run_config(test::source_dir() + "/" + f)) << f;
  }
  RunConfig big = load_run_config(test::source_dir() + "/configs/dmt_33b.yaml");
  EXPECT_EQ(big.chat_template, Template::kVicunaV11);
  EXPECT_EQ(big.stages[0].epochs, 3);
  EXPECT_DOUBLE_EQ(big.stages[0].lr, 2e-5);
  EXPECT_DOUBLE_EQ(big.stages[0].warmup_ratio, 0.03);
  EXPECT_EQ(big.train.precision, Precision::kBf16);
  EXPECT_DOUBLE_EQ(big.k, 1.0 / 256);
}

// docs/config.md's key reference is the table the reader is driven by, not a copy kept by hand.
TEST(ConfigKeys, DocsConfigIsTheDeclaredTable) {
  const std::string doc = fs::read_file(test::source_dir() + "/docs/config.md");
  const std::string table = key_reference_markdown();
  EXPECT_NE(doc.find(table), std::string::npos)
      << "docs/config.md's key table is stale: replace it with the output of `build/sft config keys`";
  // Every key the table names is one the reader accepts: --set it to the value it resolves to.
  const RunConfig base = parse_run_config(tiny_yaml("strategy: dmt\n"), "t.yaml");
  const nlohmann::json j = base.to_json();
  int checked = 0;
  for (const auto& k : key_reference()) {
    const auto dot = k.key.find('.');
    if (dot == std::string::npos || k.key.find_first_of("<[") != std::string::npos) continue;
    const std::string section = k.key.substr(0, dot), key = k.key.substr(dot + 1);
    if (!j.contains(section) || !j[section].is_object() || !j[section].contains(key)) continue;
    const nlohmann::json& v = j[section][key];
    if (v.is_structured() || v.is_null()) continue;
    const std::string text = v.is_string() ? v.get<std::string>() : v.dump();
    if (text.empty()) continue;
    const RunConfig again = parse_run_config(tiny_yaml("strategy: dmt\n"), "t.yaml", {k.key + "=" + text});
    EXPECT_EQ(again.to_json()[section][key], v) << k.key;
    ++checked;
  }
  EXPECT_GT(checked, 40);
}

// Settings a resumed run may change without --resume-override are those that do not change
// what is trained; the rest must be named.
TEST(ConfigKeys, AResumeMayChangeWhereAndHowOftenButNotWhatIsTrained) {
  for (const char* k :
       {"output_dir", "config_file", "train.log_every", "train.save_every", "train.max_steps",
        "train.threads", "train.device", "data.cache_dir", "datasets.math.path", "dist.backend",
        "dist.timeout_s", "eval.at_end", "eval.benchmarks[0].name", "model.path", "model.save_dtype"})
    EXPECT_TRUE(resume_may_change(k)) << k;
  for (const char* k :
       {"train.lr", "train.batch_size", "train.precision", "stages[1].lr", "data.max_seq_len",
        "datasets.math.fraction", "datasets.math.format", "dist.strategy", "model.config.hidden_size",
        "model.init", "seed", "strategy.k", "template.name", "no_such_key"})
    EXPECT_FALSE(resume_may_change(k)) << k;
}

}  // namespace
}  // namespace sft::config
