// Internal: the parts of the evaluator (evaluator.h) that its files share: generation of
// many prompts in batches sized to the context and the device's memory
// (batched_generation.cpp), and one function per benchmark family that generates and
// scores (benchmark_runs.cpp), which run_benchmark dispatches to through the benchmark table
// (evaluator.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sft/config/choices.h"
#include "sft/data/tokenizer.h"
#include "sft/eval/evaluator.h"
#include "sft/eval/text_generation.h"
#include "sft/model/llama.h"

namespace sft::eval {

// ---- batched generation with a context budget ----------------------------------------

struct GenItem {
  std::vector<std::int32_t> prompt;
  double temperature = 0;
};

struct GenSettings {
  std::string label;  // for progress lines
  std::int64_t max_new_tokens = 256, batch_size = 8, top_k = 0;
  double top_p = 1.0;
  std::uint64_t seed = 0;
  bool bf16 = false;
  std::vector<std::string> stop_strings;
  int rank = 0, world = 1;  // batches are generated round-robin over the ranks
  std::function<std::vector<std::string>(const std::string&)> all_gather;
  double memory_budget_bytes = 0;  // <= 0: measured
};

struct Generated {
  std::vector<TextResult> out;
  std::int64_t prompts_truncated = 0;
};

// Generates every item. Batches hold prompts of one temperature and similar length (longest
// first), so little padding is decoded and each batch gets the longest budget that fits the
// context: min(max_new_tokens, context - longest prompt). A prompt that would leave fewer
// than min(max_new_tokens, context/4) tokens keeps only its last tokens.
Generated generate_all(const model::Llama& m, const data::Tokenizer& tok, std::vector<GenItem> items,
                       const GenSettings& s);

// ---- the benchmarks: generate, then score on rank 0 (the other ranks return {}) -------

nlohmann::ordered_json run_gsm8k(const model::Llama& m, const data::Tokenizer& tok, const EvalRequest& req,
                                 const std::string& path);
nlohmann::ordered_json run_humaneval(const model::Llama& m, const data::Tokenizer& tok,
                                     const EvalRequest& req, const std::string& path);
nlohmann::ordered_json run_mtbench(const model::Llama& m, const data::Tokenizer& tok, const EvalRequest& req,
                                   const std::string& path);
nlohmann::ordered_json run_general(const model::Llama& m, const data::Tokenizer& tok, const EvalRequest& req,
                                   const std::string& path);

// ---- the benchmark table: one row per config::Benchmark, in its order ------------------

using BenchmarkRunner = nlohmann::ordered_json (*)(const model::Llama&, const data::Tokenizer&,
                                                   const EvalRequest&, const std::string& path);

struct BenchmarkRow {
  config::Benchmark benchmark;
  config::Benchmark kind;       // the metric family: gsm8k, humaneval, mtbench or general
  const char* default_data;     // shipped file, relative to the repository root; "" when none
  const char* data_needed;      // what to give when there is none
  std::int64_t max_new_tokens;  // generation limit unless the request sets one
  bool sandboxed;               // scored by running the model's programs (sandbox.h)
  // Parses the data file in full (the first `limit` items) and counts its items.
  std::size_t (*count_items)(const std::string& path, std::int64_t limit);
  BenchmarkRunner run;
  // The terminal line, from the benchmark's name and its results' summary.
  std::string (*summary)(const std::string& name, const nlohmann::ordered_json& summary);
};

const BenchmarkRow& benchmark_row(config::Benchmark b);
// The row a request's benchmark names; ConfigError naming --benchmark when it names none.
const BenchmarkRow& benchmark_row(const std::string& name);

}  // namespace sft::eval
