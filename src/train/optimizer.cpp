#include "sft/train/optimizer.h"

#include <ATen/ATen.h>

#include <cmath>

namespace sft::train {

FlatAdamW::FlatAdamW(model::Llama& model, const AdamWOptions& opts) : opts_(opts) {
  const auto& ps = model.parameters();
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < ps.size(); ++i)
    if (ps[i].tensor.dim() >= 2) order.push_back(i);
  for (std::size_t i = 0; i < ps.size(); ++i)
    if (ps[i].tensor.dim() < 2) order.push_back(i);
  std::int64_t total = 0;
  for (std::size_t i : order) {
    slots_.push_back({ps[i].name, total, ps[i].tensor.numel()});
    total += ps[i].tensor.numel();
    if (ps[i].tensor.dim() >= 2) decay_numel_ = total;
  }
  auto fopts = at::TensorOptions().dtype(at::kFloat).device(model.device());
  auto popts = fopts.dtype(model.dtype());
  params_ = at::empty({total}, popts);
  grads_ = at::zeros({total}, popts);
  m_ = at::zeros({total}, fopts);
  v_ = at::zeros({total}, fopts);
  at::NoGradGuard ng;
  for (std::size_t k = 0; k < order.size(); ++k) {
    std::size_t i = order[k];
    const auto& slot = slots_[k];
    at::Tensor view = params_.narrow(0, slot.offset, slot.numel).view(ps[i].tensor.sizes());
    view.copy_(ps[i].tensor);
    at::Tensor p = view.detach().requires_grad_(true);
    p.mutable_grad() = grads_.narrow(0, slot.offset, slot.numel).view(ps[i].tensor.sizes());
    model.set_parameter(i, p);
  }
}

void FlatAdamW::zero_grad() { grads_.zero_(); }

double FlatAdamW::clip_grad_norm(double max_norm) {
  double norm = at::linalg_vector_norm(grads_, 2, c10::nullopt, false, at::kFloat).item<double>();
  if (max_norm > 0 && std::isfinite(norm)) {
    double coef = max_norm / (norm + 1e-6);  // torch.nn.utils.clip_grad_norm_
    if (coef < 1.0) grads_.mul_(coef);
  }
  return norm;
}

void FlatAdamW::step(double lr, std::int64_t begin, std::int64_t end) {
  if (end < 0) end = params_.numel();
  ++step_;
  const double bc1 = 1.0 - std::pow(opts_.beta1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(opts_.beta2, static_cast<double>(step_));
  const bool fp32 = params_.scalar_type() == at::kFloat;
  // fp32: in place over the whole range. bf16 weights: fp32 chunks, rounded back.
  const std::int64_t chunk = fp32 ? std::max<std::int64_t>(end - begin, 1) : (std::int64_t(1) << 22);
  at::NoGradGuard ng;
  for (std::int64_t b = begin; b < end; b += chunk) {
    const std::int64_t n = std::min(chunk, end - b);
    at::Tensor p = fp32 ? params_.narrow(0, b, n) : params_.narrow(0, b, n).to(at::kFloat);
    at::Tensor g = fp32 ? grads_.narrow(0, b, n) : grads_.narrow(0, b, n).to(at::kFloat);
    at::Tensor m = m_.narrow(0, b, n);
    at::Tensor v = v_.narrow(0, b, n);
    // Decoupled weight decay on the decayed prefix only.
    if (opts_.weight_decay > 0 && b < decay_numel_) {
      const std::int64_t e = std::min(b + n, decay_numel_);
      p.narrow(0, 0, e - b).mul_(1.0 - lr * opts_.weight_decay);
    }
    m.mul_(opts_.beta1).add_(g, 1.0 - opts_.beta1);
    v.mul_(opts_.beta2).addcmul_(g, g, 1.0 - opts_.beta2);
    at::Tensor denom = (v.sqrt() / std::sqrt(bc2)).add_(opts_.eps);
    p.addcdiv_(m, denom, -lr / bc1);
    if (!fp32) params_.narrow(0, b, n).copy_(p);
  }
}

void FlatAdamW::reset_state() {
  m_.zero_();
  v_.zero_();
  step_ = 0;
}

std::int64_t warmup_steps(double ratio, std::int64_t steps, std::int64_t total) {
  if (steps >= 0) return steps;
  return static_cast<std::int64_t>(std::ceil(ratio * static_cast<double>(total)));
}

double lr_at(const std::string& schedule, double peak, double min_ratio, std::int64_t warmup, std::int64_t total,
             std::int64_t step) {
  if (step < warmup) return peak * static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, warmup));
  if (schedule == "constant") return peak;
  double progress = static_cast<double>(step - warmup) / static_cast<double>(std::max<std::int64_t>(1, total - warmup));
  progress = std::min(1.0, std::max(0.0, progress));
  double f = schedule == "linear" ? 1.0 - progress : 0.5 * (1.0 + std::cos(M_PI * progress));
  return peak * (min_ratio + (1.0 - min_ratio) * f);
}

}  // namespace sft::train
