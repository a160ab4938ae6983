// The closed choices outside the run config (benchmarks, strategies, --dtype), the
// evaluator's benchmark table, the one token-budget rule and step count of the data module,
// and config's reader of sweep files.
#include "sft/config/choices.h"

#include <gtest/gtest.h>

#include "sft/config/yaml_file.h"
#include "sft/data/stage_stream.h"
#include "sft/eval/evaluator.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft {
namespace {

using config::Benchmark;

TEST(Choices, NamesParseBackToTheirValues) {
  EXPECT_EQ(config::choice_list<Benchmark>(), "gsm8k, humaneval, mtbench, math, code, general");
  EXPECT_EQ(config::choice_list<config::Strategy>(), "multi_task, sequential, mixed_sequential, dmt, custom");
  EXPECT_EQ(config::choice_names<config::ComputeDtype>(), (std::vector<std::string>{"fp32", "bf16"}));
  for (const auto& c : config::Choices<Benchmark>::all)
    EXPECT_EQ(config::parse_choice<Benchmark>(c.name), c.value);
  EXPECT_EQ(config::parse_choice<Benchmark>("maths"), std::nullopt);
  EXPECT_STREQ(config::strategy_name(config::Strategy::kMixedSequential), "mixed_sequential");
}

TEST(Choices, EveryBenchmarkHasItsRow) {
  EXPECT_EQ(eval::benchmark_kind(Benchmark::kMath), Benchmark::kGsm8k);
  EXPECT_EQ(eval::benchmark_kind(Benchmark::kCode), Benchmark::kHumaneval);
  EXPECT_EQ(eval::benchmark_kind(Benchmark::kMtbench), Benchmark::kMtbench);
  EXPECT_EQ(eval::default_data(Benchmark::kGsm8k), "");
  EXPECT_EQ(eval::default_data(Benchmark::kGeneral), "data/tiny/general_test.json");
  EXPECT_EQ(eval::default_max_new_tokens(Benchmark::kMtbench), 1024);  // FastChat's
  EXPECT_EQ(eval::default_max_new_tokens(Benchmark::kCode), 128);
  for (const auto& c : config::Choices<Benchmark>::all)
    EXPECT_NO_THROW(eval::default_data(c.value)) << c.name;
  eval::EvalRequest req;
  req.benchmark = "humaneval";
  try {
    eval::resolve_data(req);
    ADD_FAILURE() << "humaneval has no shipped data";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "--benchmark humaneval needs --data FILE (HumanEval.jsonl.gz)");
  }
}

TEST(Choices, OneTokenBudgetAndStepCount) {
  EXPECT_EQ(data::micro_batch_token_budget(0, 4, 512), 2048);  // batch_size rows of max_seq_len
  EXPECT_EQ(data::micro_batch_token_budget(3000, 4, 512), 3000);
  EXPECT_EQ(data::step_count(10, 4), 3);  // the last step is short
  EXPECT_EQ(data::step_count(12, 4), 3);
  EXPECT_EQ(data::step_count(0, 4), 0);
}

TEST(Choices, YamlFileKeepsLinesAndFlowText) {
  test::TempDir d;
  fs::write_file_atomic(d.file("s.yaml"),
                        "name: x\n"
                        "axes:\n"
                        "  seed: [1, 2]\n"
                        "  train.lr: 0.001\n"
                        "set: {strategy: {name: dmt, k: 1/64}}\n"
                        "empty:\n");
  EXPECT_EQ(config::read_yaml_file(d.file("s.yaml")).get("axes")->get("train.lr")->key_line, 4);
  const config::YamlValue root = config::read_yaml_file(d.file("s.yaml"), {"axes.seed=[3, 4, 5]"});
  ASSERT_EQ(root.kind, config::YamlValue::kMap);
  ASSERT_NE(root.get("axes"), nullptr);
  const config::YamlValue& seed = root.get("axes")->items.at(0);
  EXPECT_EQ(seed.key, "seed");
  EXPECT_EQ(seed.kind, config::YamlValue::kList);
  ASSERT_EQ(seed.items.size(), 3u);  // the override applied
  EXPECT_EQ(seed.items[2].text, "5");
  EXPECT_EQ(root.get("set")->items.at(0).text, "{name: dmt, k: 1/64}");
  EXPECT_EQ(root.get("empty")->kind, config::YamlValue::kNull);
  EXPECT_EQ(root.get("missing"), nullptr);
  fs::write_file_atomic(d.file("bad.yaml"), "a: [1,\n");
  try {
    config::read_yaml_file(d.file("bad.yaml"));
    ADD_FAILURE() << "a syntax error is a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(d.file("bad.yaml") + ":"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("YAML syntax error"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sft
