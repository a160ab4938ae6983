// Scoring and generation with a Llama.
//
// score(): log p(id_i | ids_<i) for every position (none for the first), in fp32 from one
// forward pass. generate(): batched decoding with a KV cache (prompts left-padded, their
// pads masked out), greedy at temperature 0, else temperature / top-k / top-p sampling from
// a seeded generator; each sequence stops at an end token, at max_new_tokens, or when the
// caller's stop predicate says so.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "sft/model/llama.h"

namespace sft::model {

// Entry 0 is nullopt. `bf16`: autocast bf16 compute (fp32 otherwise).
std::vector<std::optional<double>> score(const Llama& model, const std::vector<std::int64_t>& ids,
                                         bool bf16 = false);

struct GenerateOptions {
  std::int64_t max_new_tokens = 256;
  double temperature = 0.0;  // 0: greedy
  double top_p = 1.0;
  std::int64_t top_k = 0;  // 0: no top-k
  std::uint64_t seed = 0;
  std::vector<std::int64_t> stop_ids;  // end tokens (EOS, <|im_end|>, ...)
  bool use_cache = true;               // false recomputes the whole prefix each step (for checking)
  bool bf16 = false;
  // Called after each new token with the tokens generated so far; true stops that sequence.
  std::function<bool(std::size_t seq, const std::vector<std::int64_t>& generated)> stop;
};

struct Generation {
  std::vector<std::int64_t> tokens;  // generated tokens, without the stop token
  std::string finish_reason;         // "stop_token" | "stop" | "length"
};

// Bytes one more row of a generation batch holds while decoding up to `capacity` tokens with
// tensors of `dtype_bytes` (the model's dtype: its KV cache has it): the KV cache over every
// layer, the per-token activations of the prefill and the row's logits. The evaluator sizes
// its batches with it, and the dry-run planner its evaluation phase.
double generation_bytes_per_row(const LlamaConfig& c, std::int64_t capacity, int dtype_bytes);

std::vector<Generation> generate(const Llama& model, const std::vector<std::vector<std::int64_t>>& prompts,
                                 const GenerateOptions& opts);

}  // namespace sft::model
