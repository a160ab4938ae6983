// FlatAdamW: AdamW (Loshchilov & Hutter) with decoupled weight decay over one contiguous
// fp32 buffer of parameters, gradients and moments.
//
// The model's parameters are rebound to views of `params()`, and their .grad to views of
// `grads()`, so that zeroing, clipping, all-reducing, sharding and the update are a few
// vectorised passes over flat memory instead of hundreds of small kernels. Matrices come
// first and get weight decay; vectors (norm weights, biases) come last and get none.
// The update matches torch.optim.AdamW (bias-corrected, eps outside the square root).
// Parameters and gradients take the model's dtype: fp32 master weights normally, bf16 for
// precision bf16-pure (the update is then computed in fp32 chunks and rounded back);
// moments are always fp32.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sft/model/llama.h"

namespace sft::train {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

class FlatAdamW {
 public:
  // Rebinds model parameters (copying their values) to the flat buffer on `device`.
  FlatAdamW(model::Llama& model, const AdamWOptions& opts);

  at::Tensor& params() { return params_; }
  at::Tensor& grads() { return grads_; }
  at::Tensor& exp_avg() { return m_; }
  at::Tensor& exp_avg_sq() { return v_; }
  std::int64_t numel() const { return params_.numel(); }
  std::int64_t decay_numel() const { return decay_numel_; }  // [0, decay_numel) is decayed
  std::int64_t step_count() const { return step_; }
  void set_step_count(std::int64_t s) { step_ = s; }

  void zero_grad();
  // Global L2 norm of the gradients; scales them to max_norm when above it (max_norm > 0).
  double clip_grad_norm(double max_norm);
  // One update at learning rate lr, on the elements [begin, end) (a ZeRO shard), or all.
  void step(double lr, std::int64_t begin = 0, std::int64_t end = -1);
  void reset_state();  // zero moments and the step count (a new stage, as in the paper)

  // (name, offset, numel) of each parameter in the flat buffer.
  struct Slot {
    std::string name;
    std::int64_t offset, numel;
  };
  const std::vector<Slot>& slots() const { return slots_; }

 private:
  AdamWOptions opts_;
  at::Tensor params_, grads_, m_, v_;
  std::int64_t decay_numel_ = 0, step_ = 0;
  std::vector<Slot> slots_;
};

// Learning rate at `step` (0-based) of a stage with `total` steps, as Hugging Face's
// get_{cosine,linear,constant}_schedule_with_warmup compute it (lr 0 at step 0 of warmup).
double lr_at(const std::string& schedule, double peak, double min_ratio, std::int64_t warmup, std::int64_t total,
             std::int64_t step);
// Warmup steps: warmup_steps when >= 0, else ceil(ratio * total).
std::int64_t warmup_steps(double ratio, std::int64_t steps, std::int64_t total);

}  // namespace sft::train
