// The dry-run planner's memory model: the peak bytes one rank holds in each phase of a run
// (load, forward+backward, optimizer step, export, evaluation), above what was live before
// the model was built, for a LLaMA config, the largest micro-batch, a precision and a
// distributed strategy.
//
// The training state is counted exactly from the flat layout (FlatAdamW: parameters,
// gradients and fp32 moments, each whole or this rank's chunk of every unit); so are the
// transient buffers of each phase: the seeded init's parameter in flight, ZeRO-3's gathered
// units (the one computing and dist.prefetch ahead) and its bf16 copy of the shard, the
// gradient reductions in flight (dist.reduce_inflight units), the collectives' copies (Gloo
// copies its reduce buffers, NCCL works in place), the evaluator's weights and KV cache
// (model::generation_bytes_per_row).
// Activations are fits to CpuMemoryTracker measurements of sft's own forward and backward
// (bench/RESULTS.md): without checkpointing, per token per layer 32 D + 18.7 K Dh + 8.24 F
// bytes in bf16 plus the fused loss's lm_head gradient and one chunk of logits; with it,
// each layer's fp32 input and one layer's recomputation. Tests hold every phase to 10 % of
// a 2-rank measurement for every strategy (tests/dist/memory_plan_test.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sft/config/choices.h"
#include "sft/model/llama_config.h"

namespace sft::train {

struct MemoryPlanInput {
  model::LlamaConfig model;
  // The flat layout's units (embedding, each layer, head), padded to the world size
  // (FlatLayout::build on a meta-device model); empty: derived from the config.
  std::vector<std::int64_t> units;
  std::int64_t largest_param = 0;  // elements; 0: derived from the config
  int world = 1;
  config::DistStrategy strategy = config::DistStrategy::kDdp;
  config::Precision precision = config::Precision::kBf16;
  bool activation_checkpointing = false;
  bool copying_collectives = false;  // Gloo: collectives copy their input and output buffers
  // zero3: units gathered ahead (dist.prefetch), and whether layers are gathered in bf16 (a
  // bf16 copy of the shard beside fp32 masters); zero2/3: gradient reductions in flight and
  // the dtype they are summed in.
  int prefetch = 1;
  bool bf16_gathers = false;
  int reduce_inflight = 2;
  bool bf16_reduce = false;
  bool async_checkpoint = false;  // a checkpoint copies the rank's state to host memory first
  bool cpu = true;                // the run's tensors live in host memory (what such a copy adds to)
  // The largest micro-batch: rows x padded width, and its trained tokens.
  std::int64_t rows = 1;
  std::int64_t seq_len = 2048;
  double trained_fraction = 0.5;  // share of the tokens that are loss targets
  bool fused_attention = false;   // flash / memory-efficient SDPA: no T^2 scores kept
  // Attention scores per head of the largest micro-batch; packed rows attend per sample
  // (model/varlen.h), so this is far below rows x seq_len^2. 0: rows x seq_len^2.
  double score_elements = 0;
  bool seeded_init = true;  // model.init random: one parameter drawn whole at a time
  // Evaluation: on the exported model, after training (the training state given back) or
  // at a stage's end (the state kept). Its batch is planned at the full context.
  bool eval = false;
  bool eval_mid_training = false;
  std::int64_t eval_batch = 32;
  int eval_weight_bytes = 2;  // bf16 on a GPU, fp32 on the CPU
  double device_bytes = 0;    // the GPU's memory, caps the eval batch; 0: no cap
};

struct MemoryPlan {
  double weights = 0, grads = 0, optimizer = 0, gathered = 0;  // bytes per rank
  double reducing = 0;                                         // gradient reductions in flight
  double activations = 0, logits = 0;
  double activations_no_ckpt = 0, activations_ckpt = 0;  // both, for comparison
  // Peak per phase; total is the largest.
  double load = 0, forward_backward = 0, optimizer_step = 0, export_model = 0, eval = 0, checkpoint = 0;
  double forward_backward_no_ckpt = 0, forward_backward_ckpt = 0;
  double total = 0;
  nlohmann::ordered_json to_json() const;
  nlohmann::ordered_json phases_json() const;  // {"load": bytes, ...}, the names PhaseMeter uses
};

MemoryPlan plan_memory(const MemoryPlanInput& in);

// GPU memory in bytes for a name like "a100-80gb", "h100", "h200"; 0 when unknown.
double gpu_memory_bytes(const std::string& gpu_type);

// HF configs of the LLaMA-1 sizes the paper uses (7B, 13B, 33B, 65B).
model::LlamaConfig llama1_config(const std::string& size);

std::string format_bytes(double bytes);

}  // namespace sft::train
