#include "sft/train/memory_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "sft/model/generate.h"
#include "sft/util/error.h"

namespace sft::train {

namespace {
double gib(double b) { return b / (1024.0 * 1024.0 * 1024.0); }
}  // namespace

nlohmann::ordered_json MemoryPlan::to_json() const {
  return {{"weights_gib", gib(weights)},
          {"grads_gib", gib(grads)},
          {"optimizer_gib", gib(optimizer)},
          {"gathered_params_gib", gib(gathered)},
          {"reductions_in_flight_gib", gib(reducing)},
          {"activations_gib", gib(activations)},
          {"logits_gib", gib(logits)},
          {"total_gib", gib(total)},
          {"activations_without_checkpointing_gib", gib(activations_no_ckpt)},
          {"activations_with_checkpointing_gib", gib(activations_ckpt)},
          {"phases_gib",
           {{"load", gib(load)},
            {"forward_backward", gib(forward_backward)},
            {"optimizer", gib(optimizer_step)},
            {"export", gib(export_model)},
            {"eval", gib(eval)},
            {"checkpoint", gib(checkpoint)}}},
          {"forward_backward_without_checkpointing_gib", gib(forward_backward_no_ckpt)},
          {"forward_backward_with_checkpointing_gib", gib(forward_backward_ckpt)}};
}

nlohmann::ordered_json MemoryPlan::phases_json() const {
  nlohmann::ordered_json j = {{"load", load},
                              {"forward_backward", forward_backward},
                              {"optimizer", optimizer_step},
                              {"export", export_model},
                              {"checkpoint", checkpoint}};
  if (eval > 0) j["eval"] = eval;
  return j;
}

namespace {

// The model's and the micro-batch's dimensions and the run's switches, in the formulas' letters.
struct Dims {
  double W, D, F, H, K, Dh, V, L, B, T, N, Nt;
  bool pure, half, z1, z2, z3, sharded;
  double pb;  // parameter and gradient bytes: fp32 master weights, or bf16
};

Dims dims_of(const MemoryPlanInput& in) {
  const auto& c = in.model;
  Dims d;
  d.W = std::max(1, in.world);
  d.D = static_cast<double>(c.hidden_size);
  d.F = static_cast<double>(c.intermediate_size);
  d.H = static_cast<double>(c.num_attention_heads);
  d.K = static_cast<double>(c.num_key_value_heads);
  d.Dh = static_cast<double>(c.head_dim);
  d.V = static_cast<double>(c.vocab_size);
  d.L = static_cast<double>(c.num_hidden_layers);
  d.B = static_cast<double>(in.rows);
  d.T = static_cast<double>(in.seq_len);
  d.N = d.B * d.T;
  d.Nt = d.N * in.trained_fraction;
  using config::DistStrategy;
  d.pure = in.precision == config::Precision::kBf16Pure;
  d.half = in.precision != config::Precision::kFp32;
  d.z1 = in.strategy != DistStrategy::kDdp;
  d.z3 = in.strategy == DistStrategy::kZero3;
  d.z2 = d.z3 || in.strategy == DistStrategy::kZero2;
  d.sharded = d.z1;  // every ZeRO stage splits the units into per-rank chunks
  d.pb = d.pure ? 2.0 : 4.0;
  return d;
}

// The flat layout: units padded to a multiple of the world size; a rank owns one chunk of each.
struct Layout {
  double P, U;        // padded total, largest unit
  double Cmax, mine;  // a rank's largest chunk, all its chunks
};

Layout flat_layout(const MemoryPlanInput& in, const Dims& d) {
  const auto& c = in.model;
  const double W = d.W, V = d.V, D = d.D;
  std::vector<double> units;
  for (auto u : in.units) units.push_back(static_cast<double>(u));
  if (units.empty()) {
    auto pad = [&](double n) { return std::ceil(n / W) * W; };
    const double layer = static_cast<double>(c.num_layer_parameters());  // biases and q/k norms included
    units.push_back(pad(V * D));
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) units.push_back(pad(layer));
    units.push_back(pad(D + (c.tie_word_embeddings ? 0 : V * D)));
  }
  Layout f{0, 0, 0, 0};
  for (double u : units) {
    f.P += u;
    f.U = std::max(f.U, u);
  }
  f.Cmax = f.U / W;
  f.mine = f.P / W;
  return f;
}

// Activations kept for the backward, per layer: bytes per token per layer and per attention
// score, fits to measurements of sft's own forward (bf16; fp32 keeps 4-byte activations and
// an fp32 softmax). The fused kernels (model/fused.h) keep no normalised copies (8 D bytes),
// no SiLU output (F elements), and q, k, v as three tensors instead of the projection's whole
// output and rotated copies of q and k ((H + K) Dh elements): that much less than the
// op-by-op layer first fitted. Qwen3's per-head q/k norms keep their inputs ((H + K) Dh
// elements) for their backward.
double layer_activations(const MemoryPlanInput& in, const Dims& d) {
  const double D = d.D, F = d.F, H = d.H, K = d.K, Dh = d.Dh, B = d.B, T = d.T, N = d.N;
  const bool half = d.half;
  const double per_token = (half ? 1.0 : 1.06) * (24.0 * D + 18.7 * K * Dh + 8.24 * F) -
                           (half ? 2.0 : 4.0) * (F + (H + K) * Dh) +
                           (in.model.qk_norm() ? (half ? 2.0 : 4.0) * (H + K) * Dh : 0.0);
  const double score_elems = in.score_elements > 0 ? in.score_elements : B * T * T;
  const double scores = in.fused_attention ? 4.0 * N * H : (half ? 1.93 : 6.3) * H * score_elems;
  return N * per_token + scores;
}

// The fused loss, and the activations with and without checkpointing.
void plan_activations(const Dims& d, double layer, MemoryPlan& p) {
  const double D = d.D, V = d.V, L = d.L, N = d.N, Nt = d.Nt;
  // The fused loss keeps lm_head's gradient (and a bf16 copy under autocast), the hidden
  // states' gradient, and one chunk of at most 2^23 logits in flight.
  p.logits = d.half ? 6.0 * V * D + 2.0 * Nt * D + 12.0 * std::min(Nt * V, 8388608.0)
                    : 4.0 * V * D + 4.0 * Nt * D + 8.0 * std::min(Nt * V, 8388608.0);
  p.activations_no_ckpt = L * layer;
  // Checkpointing keeps each layer's fp32 input and recomputes one layer at a time; the
  // loss's buffers are mostly gone by then.
  p.activations_ckpt = L * N * D * 4.0 + 1.35 * layer;
}

// ZeRO-2/3: a unit's fresh gradient (ZeRO-2: in autograd's tensors until the unit is
// complete, then one padded buffer; ZeRO-3: one flat tensor in the gather dtype) is
// converted to the reduce dtype and reduce-scattered; dist.reduce_inflight reductions
// (the unit and its output chunk, and Gloo's copies of both) wait for their turn.
// ZeRO-3 holds the unit computing and dist.prefetch units gathered ahead.
void plan_collectives(const MemoryPlanInput& in, const Dims& d, const Layout& f, MemoryPlan& p) {
  const bool z2 = d.z2, z3 = d.z3;
  const double pb = d.pb, U = f.U, Cmax = f.Cmax;
  const double gb = z3 && in.bf16_gathers ? 2.0 : pb;  // a gathered layer's bytes per element
  const double rb = z2 && in.bf16_reduce ? 2.0 : (z2 ? 4.0 : pb);
  const double inflight = std::max(1, in.reduce_inflight);
  // A reduce-scatter of a unit: Gloo copies the input unit and the output chunk through
  // buffers of its own; NCCL works in place (and sft's all-gather does on both).
  const double one_reduction = rb * (U + Cmax) + (in.copying_collectives ? rb * (U + Cmax) : 0.0);
  p.reducing = z2 ? inflight * one_reduction + std::max(gb, pb) * U : 0.0;
  p.gathered = z3 ? (1.0 + std::max(0, in.prefetch)) * gb * U : 0.0;
}

// Evaluation of the exported model: its weights, and a batch of rows decoding to the full
// context, as many as fit half of the memory left (the evaluator's rule).
double eval_peak(const MemoryPlanInput& in, double rope, double states) {
  const auto& c = in.model;
  const double held = in.eval_mid_training ? rope + states : 0.0;
  const double weights = static_cast<double>(c.num_parameters()) * in.eval_weight_bytes;
  const double row = model::generation_bytes_per_row(c, c.max_position_embeddings, in.eval_weight_bytes);
  double rows = static_cast<double>(std::max<std::int64_t>(1, in.eval_batch));
  if (in.device_bytes > 0)
    rows = std::min(rows, std::max(1.0, std::floor(0.5 * (in.device_bytes - held - weights) / row)));
  return held + weights + rows * row;
}

}  // namespace

MemoryPlan plan_memory(const MemoryPlanInput& in) {
  const auto& c = in.model;
  const Dims d = dims_of(in);
  const Layout f = flat_layout(in, d);
  const bool pure = d.pure, z2 = d.z2, z3 = d.z3, sharded = d.sharded;
  const double P = f.P, U = f.U, mine = f.mine, pb = d.pb;
  const double largest =
      in.largest_param > 0 ? static_cast<double>(in.largest_param) : std::max(d.V * d.D, d.D * d.F);

  MemoryPlan p;
  p.weights = pb * (z3 ? mine : P);
  p.grads = pb * (z2 ? mine : P);
  p.optimizer = 8.0 * (sharded ? mine : P);  // AdamW exp_avg + exp_avg_sq in fp32
  const double rope =
      2.0 * 4.0 * std::max(d.T, static_cast<double>(c.max_position_embeddings)) * d.Dh;  // cos, sin tables
  const double states = p.weights + p.grads + p.optimizer;
  // ---- load: the state, plus the seeded init's parameter in flight (drawn whole, then the
  // next while the last is still held); read from safetensors, slices convert in place.
  p.load = states + (in.seeded_init ? 2.0 * 4.0 * largest : 0.0);

  // ---- forward + backward.
  const double layer = layer_activations(in, d);
  plan_activations(d, layer, p);
  const double ckpt_peak = d.L * d.N * d.D * 4.0 + std::max(p.logits + 0.75 * layer, 1.35 * layer);
  plan_collectives(in, d, f, p);
  // ZeRO-3's copy of its shard in the gather dtype when that is not the master's.
  const double compute_copy = z3 && in.bf16_gathers && !pure ? 2.0 * mine : 0.0;
  // Without checkpointing the peak comes as the backward starts, every activation still held:
  // ZeRO-3 has launched no reduction yet (its reductions run as layers' activations go).
  p.forward_backward_no_ckpt =
      rope + states + compute_copy + p.activations_no_ckpt + p.logits + (z3 ? 0.0 : p.reducing) + p.gathered;
  p.forward_backward_ckpt = rope + states + compute_copy + ckpt_peak + p.reducing + p.gathered;
  const bool ckpt = in.activation_checkpointing;
  p.activations = ckpt ? p.activations_ckpt : p.activations_no_ckpt;
  p.forward_backward = ckpt ? p.forward_backward_ckpt : p.forward_backward_no_ckpt;

  // ---- optimizer step: the CPU's one-pass loop and the fused CUDA kernel allocate nothing;
  // bf16 weights update in fp32 chunks of 4M elements. ZeRO-1/2 then all-gather each unit's
  // updated chunk in place (sft's all-gather copies nothing on either backend).
  p.optimizer_step = rope + states + compute_copy + (pure ? 3.0 * 4.0 * 4194304.0 : 0.0);

  // ---- export: streamed one parameter at a time; ZeRO-3 gathers one unit at a time, in the
  // master dtype (under Gloo the previous unit may still be held: its worker thread lets go
  // of a finished collective's buffers a moment after the caller's wait returns).
  p.export_model = rope + states + compute_copy + (z3 ? pb * U * (in.copying_collectives ? 2.0 : 1.0) : 0.0);

  // ---- checkpoint: tensors stream to the files (a CPU tensor from its own memory, a GPU's
  // through host staging, not device memory); an asynchronous save first copies rank 0's
  // part of the state (the parameters it writes and its moments) to host memory, which on
  // the CPU is tensor memory.
  const double ckpt_copy = (z3 || !sharded ? pb * (z3 ? mine : P) : pb * P) + 8.0 * (sharded ? mine : P);
  p.checkpoint = rope + states + compute_copy + (in.async_checkpoint && in.cpu ? ckpt_copy : 0.0);

  // ---- evaluation of the exported model.
  if (in.eval) p.eval = eval_peak(in, rope, states);
  p.total = std::max({p.load, p.forward_backward, p.optimizer_step, p.export_model, p.eval, p.checkpoint});
  return p;
}

// dist.gpu_type: an open name (an unknown one plans without a device size), so a table here
// rather than a closed choice of the config.
namespace {
struct GpuRow {
  const char* name;
  double gib;
};
constexpr GpuRow kGpus[] = {{"a100-80gb", 80}, {"a100", 80},      {"h100", 80},  {"h100-80gb", 80},
                            {"a800", 80},      {"a100-40gb", 40}, {"h200", 141}, {"v100", 32},
                            {"v100-32gb", 32}, {"v100-16gb", 16}, {"a10g", 24},  {"a10", 24},
                            {"l4", 24},        {"l40s", 48},      {"a6000", 48}};
}  // namespace

double gpu_memory_bytes(const std::string& t) {
  for (const auto& g : kGpus)
    if (t == g.name) return g.gib * 1024.0 * 1024.0 * 1024.0;
  return 0;
}

model::LlamaConfig llama1_config(const std::string& size) {
  nlohmann::json j = {{"vocab_size", 32000}, {"max_position_embeddings", 2048}, {"rms_norm_eps", 1e-6}};
  if (size == "7B")
    j.update({{"hidden_size", 4096},
              {"intermediate_size", 11008},
              {"num_hidden_layers", 32},
              {"num_attention_heads", 32}});
  else if (size == "13B")
    j.update({{"hidden_size", 5120},
              {"intermediate_size", 13824},
              {"num_hidden_layers", 40},
              {"num_attention_heads", 40}});
  else if (size == "33B")
    j.update({{"hidden_size", 6656},
              {"intermediate_size", 17920},
              {"num_hidden_layers", 60},
              {"num_attention_heads", 52}});
  else if (size == "65B")
    j.update({{"hidden_size", 8192},
              {"intermediate_size", 22016},
              {"num_hidden_layers", 80},
              {"num_attention_heads", 64}});
  else
    throw ConfigError("unknown LLaMA size " + size);
  return model::LlamaConfig::from_json(j, "LLaMA-" + size);
}

std::string format_bytes(double b) {
  char buf[32];
  if (b >= 1024.0 * 1024 * 1024)
    std::snprintf(buf, sizeof buf, "%.1f GiB", b / (1024.0 * 1024 * 1024));
  else
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024));
  return buf;
}

}  // namespace sft::train
