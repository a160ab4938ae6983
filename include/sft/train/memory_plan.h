// The dry-run planner's memory model: bytes per rank for weights, gradients, optimizer
// state and activations, for a LLaMA config, a micro-batch shape, a precision and a
// distributed strategy. Activation terms come from what sft's own forward keeps for the
// backward pass (bf16: per token per layer 32 D + 18.7 K Dh + 8.24 F bytes, plus 1.93 bytes
// per attention score without a fused kernel, plus the fused loss's lm_head gradient and
// one chunk of logits), least-squares fits to CpuMemoryTracker measurements
// (bench/RESULTS.md); tests hold the tiny config's estimate to its measured peak.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sft/model/llama_config.h"

namespace sft::train {

struct MemoryPlanInput {
  model::LlamaConfig model;
  int world = 1;
  std::string strategy = "ddp";     // ddp | zero1 | zero2 | zero3
  std::string precision = "bf16";   // fp32 | bf16 | bf16-pure
  bool activation_checkpointing = false;
  std::int64_t rows = 1;            // sequences per micro-batch
  std::int64_t seq_len = 2048;
  double trained_fraction = 0.5;    // share of tokens that are loss targets
  bool fused_attention = false;     // flash / memory-efficient SDPA: no T^2 scores kept
  // Attention scores per head of the largest micro-batch; packed rows attend per sample
  // (model/varlen.h), so this is far below rows x seq_len^2. 0: rows x seq_len^2.
  double score_elements = 0;
};

struct MemoryPlan {
  double weights = 0, grads = 0, optimizer = 0, gathered = 0;  // bytes per rank
  double activations = 0, logits = 0, total = 0;
  double activations_no_ckpt = 0, activations_ckpt = 0;        // both, for comparison
  nlohmann::ordered_json to_json() const;
};

MemoryPlan plan_memory(const MemoryPlanInput& in);

// GPU memory in bytes for a name like "a100-80gb", "h100", "h200"; 0 when unknown.
double gpu_memory_bytes(const std::string& gpu_type);

// HF configs of the LLaMA-1 sizes the paper uses (7B, 13B, 33B, 65B).
model::LlamaConfig llama1_config(const std::string& size);

std::string format_bytes(double bytes);

}  // namespace sft::train
