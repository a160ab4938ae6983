#include "sft/train/memory_plan.h"

#include <algorithm>
#include <cstdio>

#include "sft/util/error.h"

namespace sft::train {

nlohmann::ordered_json MemoryPlan::to_json() const {
  auto gib = [](double b) { return b / (1024.0 * 1024.0 * 1024.0); };
  return {{"weights_gib", gib(weights)},       {"grads_gib", gib(grads)},
          {"optimizer_gib", gib(optimizer)},   {"gathered_params_gib", gib(gathered)},
          {"activations_gib", gib(activations)}, {"logits_gib", gib(logits)},
          {"total_gib", gib(total)},           {"activations_without_checkpointing_gib", gib(activations_no_ckpt)},
          {"activations_with_checkpointing_gib", gib(activations_ckpt)}};
}

MemoryPlan plan_memory(const MemoryPlanInput& in) {
  const auto& c = in.model;
  const double P = static_cast<double>(c.num_parameters());
  const double W = std::max(1, in.world);
  const double D = static_cast<double>(c.hidden_size), F = static_cast<double>(c.intermediate_size);
  const double H = static_cast<double>(c.num_attention_heads), K = static_cast<double>(c.num_key_value_heads);
  const double Dh = static_cast<double>(c.head_dim), V = static_cast<double>(c.vocab_size);
  const double L = static_cast<double>(c.num_hidden_layers);
  const double B = static_cast<double>(in.rows), T = static_cast<double>(in.seq_len);
  const double N = B * T, Nt = N * in.trained_fraction;
  const bool pure = in.precision == "bf16-pure";
  const bool z1 = in.strategy != "ddp", z2 = in.strategy == "zero2" || in.strategy == "zero3", z3 = in.strategy == "zero3";
  const double layer_params = P / std::max(1.0, L);  // rough: embedding/head spread, used for gather buffers only

  MemoryPlan p;
  // fp32 master weights (bf16-pure: bf16 weights), sharded under ZeRO-3.
  p.weights = (pure ? 2.0 : 4.0) * P / (z3 ? W : 1.0);
  p.grads = (pure ? 2.0 : 4.0) * P / (z2 ? W : 1.0);
  p.optimizer = 8.0 * P / (z1 ? W : 1.0);  // AdamW exp_avg + exp_avg_sq in fp32
  // ZeRO-3 gathers two layers at a time (the one computing and the next one prefetched).
  if (z3) p.gathered = 2.0 * layer_params * 4.0;

  // Activations kept for the backward pass, per layer: bytes per token per layer and per
  // attention score, least-squares fits to CpuMemoryTracker measurements of sft's own
  // forward on LibTorch 1.13 (bench/RESULTS.md); fp32 keeps 4-byte activations and an fp32
  // softmax. With LibTorch 2.x's fused attention (no scores kept) the tiny run's estimate
  // stays within 10 % of its measured peak (DryRun.TinyEstimateIsWithinTenPercent...).
  const bool half = in.precision != "fp32";
  const double per_token = (half ? 1.0 : 1.06) * (32.0 * D + 18.7 * K * Dh + 8.24 * F);
  const double score_elems = in.score_elements > 0 ? in.score_elements : B * T * T;
  const double scores = in.fused_attention ? 4.0 * N * H : (half ? 1.93 : 6.3) * H * score_elems;
  const double layer = N * per_token + scores;
  // The fused loss keeps lm_head's gradient (and a bf16 copy under autocast), the hidden
  // states' gradient, and one chunk of at most 2^23 logits in flight.
  p.logits = half ? 6.0 * V * D + 2.0 * Nt * D + 12.0 * std::min(Nt * V, 8388608.0)
                  : 4.0 * V * D + 4.0 * Nt * D + 8.0 * std::min(Nt * V, 8388608.0);
  const double states = p.weights + p.grads + p.optimizer + p.gathered;
  p.activations_no_ckpt = L * layer;
  // Checkpointing keeps each layer's fp32 input and recomputes one layer at a time; the
  // loss's buffers are mostly gone by then.
  const double ckpt_peak = std::max(p.logits + 0.75 * layer, 1.35 * layer);
  p.activations_ckpt = L * N * D * 4.0 + 1.35 * layer;
  if (in.activation_checkpointing || in.strategy == "zero3") {  // ZeRO-3 recomputes every layer
    p.activations = p.activations_ckpt;
    p.total = states + L * N * D * 4.0 + ckpt_peak;
  } else {
    p.activations = p.activations_no_ckpt;
    p.total = states + p.activations + p.logits;
  }
  return p;
}

double gpu_memory_bytes(const std::string& t) {
  const double GiB = 1024.0 * 1024.0 * 1024.0;
  if (t == "a100-80gb" || t == "a100" || t == "h100" || t == "h100-80gb" || t == "a800") return 80 * GiB;
  if (t == "a100-40gb") return 40 * GiB;
  if (t == "h200") return 141 * GiB;
  if (t == "v100" || t == "v100-32gb") return 32 * GiB;
  if (t == "v100-16gb") return 16 * GiB;
  if (t == "a10g" || t == "a10" || t == "l4") return 24 * GiB;
  if (t == "l40s" || t == "a6000") return 48 * GiB;
  return 0;
}

model::LlamaConfig llama1_config(const std::string& size) {
  nlohmann::json j = {{"vocab_size", 32000}, {"max_position_embeddings", 2048}, {"rms_norm_eps", 1e-6}};
  if (size == "7B") j.update({{"hidden_size", 4096}, {"intermediate_size", 11008}, {"num_hidden_layers", 32}, {"num_attention_heads", 32}});
  else if (size == "13B") j.update({{"hidden_size", 5120}, {"intermediate_size", 13824}, {"num_hidden_layers", 40}, {"num_attention_heads", 40}});
  else if (size == "33B") j.update({{"hidden_size", 6656}, {"intermediate_size", 17920}, {"num_hidden_layers", 60}, {"num_attention_heads", 52}});
  else if (size == "65B") j.update({{"hidden_size", 8192}, {"intermediate_size", 22016}, {"num_hidden_layers", 80}, {"num_attention_heads", 64}});
  else throw ConfigError("unknown LLaMA size " + size);
  return model::LlamaConfig::from_json(j, "LLaMA-" + size);
}

std::string format_bytes(double b) {
  char buf[32];
  if (b >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1f GiB", b / (1024.0 * 1024 * 1024));
  else std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024));
  return buf;
}

}  // namespace sft::train
