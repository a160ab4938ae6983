// FlatAdamW: AdamW (Loshchilov & Hutter) with decoupled weight decay over contiguous flat
// buffers of parameters, gradients and moments, optionally sharded across ranks (ZeRO).
//
// FlatLayout orders every parameter unit by unit: the embedding, each decoder layer, then
// the head (final norm, lm_head). Each unit is padded to a multiple of the world size, so
// it splits into equal chunks and rank r owns chunk r of every unit. ZeRO-1 shards the
// moments, ZeRO-2 the gradients too, ZeRO-3 the parameters too; DDP shards nothing.
// Unsharded parameters are the model's own tensors, rebound to views of the flat buffer
// (and their .grad to views of the flat gradient buffer), so zeroing, clipping,
// all-reducing and updating are a few vectorised passes over flat memory.
// Matrices get weight decay; vectors (norm weights) get none. The update matches
// torch.optim.AdamW (bias-corrected, eps outside the square root). Parameters and
// gradients take the model's dtype (bf16 for precision bf16-pure: the update then runs in
// fp32 chunks and is rounded back); moments are always fp32.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sft/config/choices.h"
#include "sft/model/llama.h"

namespace sft::dist {
class Context;
}

namespace sft::train {

struct FlatLayout {
  struct Slot {
    std::string name;
    std::size_t param;           // index into Llama::parameters()
    std::int64_t offset, numel;  // flat position (padded layout)
    bool decay;
    std::vector<std::int64_t> shape;
  };
  struct Unit {
    std::int64_t offset = 0, numel = 0, padded = 0;
    std::vector<std::size_t> slots;
  };
  std::vector<Slot> slots;
  std::vector<Unit> units;
  std::int64_t total = 0;  // padded
  int world = 1;

  static FlatLayout build(const model::Llama& model, int world);
  std::int64_t chunk(std::size_t unit) const { return units[unit].padded / world; }
  std::size_t unit_of_param(std::size_t param) const;
};

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

struct Sharding {
  bool params = false, grads = false, moments = false;
  static Sharding for_strategy(config::DistStrategy strategy);
};

class FlatAdamW {
 public:
  // Copies the model's current values into the flat buffers, or, with a `source`, fills
  // them from it (then the model may be built without storage: Llama(materialize=false),
  // and a rank with sharded parameters reads only its chunks: nothing else is ever
  // materialised). Unsharded parameters are rebound to views; with sharded parameters the
  // model's tensors are released (the caller gathers units on demand).
  FlatAdamW(model::Llama& model, const AdamWOptions& opts, int world = 1, int rank = 0,
            Sharding sharding = {}, const model::ParamSource* source = nullptr);

  const FlatLayout& layout() const { return layout_; }
  const Sharding& sharding() const { return sharding_; }
  int rank() const { return rank_; }

  // Full flat parameters (unsharded) or this rank's chunks back to back (sharded).
  at::Tensor& params() { return params_; }
  at::Tensor& grads() { return grads_; }
  at::Tensor& exp_avg() { return m_; }
  at::Tensor& exp_avg_sq() { return v_; }
  std::int64_t numel() const { return layout_.total; }
  // Updates done (skipped steps not counted). Under the fused kernel the count lives on the
  // device: reading it is a host read (checkpoints do it, steps do not).
  std::int64_t step_count() const;
  void set_step_count(std::int64_t s);

  // This rank's chunk of `unit` in the params / grads storage (a view).
  at::Tensor param_chunk(std::size_t unit);
  at::Tensor grad_chunk(std::size_t unit);
  // The whole unit in the full flat parameter buffer (unsharded parameters only).
  at::Tensor param_unit(std::size_t unit);
  at::Tensor grad_unit(std::size_t unit);

  void zero_grad();
  // Global L2 norm of the gradients (all-reduced when the ranks update different ranges),
  // as a 0-dim fp64 tensor on the parameters' device: nothing is read back. With max_norm > 0
  // the gradients are scaled by min(1, max_norm / (norm + 1e-6)) there, as
  // torch.nn.utils.clip_grad_norm_ does; a non-finite norm scales nothing.
  at::Tensor clip_grad_norm_on_device(double max_norm, dist::Context* ctx = nullptr);
  double clip_grad_norm(double max_norm, dist::Context* ctx = nullptr);  // the same, read back
  // One update of this rank's elements at learning rate lr. fp32 parameters off the CPU go
  // through ATen's fused AdamW kernel (one pass over p, g, m, v; no temporaries, no host
  // reads), called once for the decayed and once for the undecayed sub-ranges; on the CPU
  // a one-pass loop of the same arithmetic; bf16 parameters in bounded fp32 chunks.
  // `skip` (optional, a 0-dim bool tensor on the device): when true, nothing is updated and
  // the step is not counted. The fused kernel decides on the device (found_inf); the CPU loop
  // and the bf16 chunks read it back.
  void step(double lr, const at::Tensor& skip = {});
  // Testing aid: the fused kernel on the CPU too (ATen has a CPU implementation).
  void set_fused(bool on) { force_fused_ = on; }
  void reset_state();  // zero moments and the step count (a new stage, as in the paper)

 private:
  struct Range {
    std::int64_t flat;  // position in the padded flat layout
    std::int64_t len;
    std::int64_t p, g, m;                                      // offsets into params_, grads_, m_/v_
    std::vector<std::pair<std::int64_t, std::int64_t>> decay;  // (local offset, length)
  };
  FlatLayout layout_;
  Sharding sharding_;
  int rank_ = 0;
  AdamWOptions opts_;
  at::Tensor params_, grads_, m_, v_;
  std::vector<Range> ranges_;
  std::vector<std::int64_t> chunk_p_, chunk_g_;  // per unit: offset of this rank's chunk in params_/grads_
  std::int64_t step_ = 0;
  at::Tensor step_t_;  // the fused kernel's step count, on the device (fp32, as ATen's optimizers keep it)
  bool force_fused_ = false;
  // The constructor's steps.
  void plan_ranges();
  void read_chunk(std::size_t unit, const model::ParamSource& source);
  void keep_chunk(std::size_t unit, const model::Llama& model, const at::TensorOptions& popts);
  void bind_unit(std::size_t unit, model::Llama& model, const model::ParamSource* source);
  bool fused() const;
  void fused_step(double lr, const at::Tensor& skip);
};

// Learning rate at `step` (0-based) of a stage with `total` steps, as Hugging Face's
// get_{cosine,linear,constant}_schedule_with_warmup compute it (lr 0 at step 0 of warmup).
double lr_at(config::Schedule schedule, double peak, double min_ratio, std::int64_t warmup,
             std::int64_t total, std::int64_t step);
// Warmup steps: warmup_steps when >= 0, else ceil(ratio * total).
std::int64_t warmup_steps(double ratio, std::int64_t steps, std::int64_t total);

}  // namespace sft::train
