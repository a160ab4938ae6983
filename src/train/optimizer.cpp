#include "sft/train/optimizer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "sft/dist/context.h"

namespace sft::train {
namespace {

// One pass of AdamW over fp32 memory: reads p, g, m, v once and writes p, m, v once
// (ATen's op-by-op form makes ~8 passes and allocates temporaries). Same arithmetic as
// torch.optim.AdamW: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
// p = p * decay - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
void adamw_fp32(float* p, const float* g, float* m, float* v, std::int64_t n, float b1, float b2, float eps,
                float decay, float step_size, float inv_sqrt_bc2) {
  at::parallel_for(0, n, 1 << 15, [&](std::int64_t begin, std::int64_t end) {
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    for (std::int64_t i = begin; i < end; ++i) {
      const float gi = g[i];
      const float mi = m[i] * b1 + gi * c1;
      const float vi = v[i] * b2 + gi * gi * c2;
      m[i] = mi;
      v[i] = vi;
      p[i] = p[i] * decay - step_size * (mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps));
    }
  });
}

}  // namespace

FlatLayout FlatLayout::build(const model::Llama& model, int world) {
  FlatLayout l;
  l.world = world;
  const auto& ps = model.parameters();
  // The model's units (embedding, each layer, final norm and lm_head), each its parameters
  // in parameters() order, whatever the architecture puts in a layer.
  l.units.resize(model.num_units());
  std::int64_t off = 0;
  for (std::size_t u = 0; u < l.units.size(); ++u) {
    auto& unit = l.units[u];
    unit.offset = off;
    for (std::size_t i : model.unit_params(u)) {
      const auto& t = ps[i].tensor;
      l.slots.push_back({ps[i].name, i, off, t.numel(), t.dim() >= 2, t.sizes().vec()});
      unit.slots.push_back(l.slots.size() - 1);
      off += t.numel();
      unit.numel += t.numel();
    }
    unit.padded = (unit.numel + world - 1) / world * world;
    off = unit.offset + unit.padded;
  }
  l.total = off;
  return l;
}

std::size_t FlatLayout::unit_of_param(std::size_t param) const {
  for (std::size_t u = 0; u < units.size(); ++u)
    for (std::size_t s : units[u].slots)
      if (slots[s].param == param) return u;
  return units.size();
}

Sharding Sharding::for_strategy(config::DistStrategy s) {
  switch (s) {
    case config::DistStrategy::kDdp: return {false, false, false};
    case config::DistStrategy::kZero1: return {false, false, true};
    case config::DistStrategy::kZero2: return {false, true, true};
    case config::DistStrategy::kZero3: return {true, true, true};
  }
  return {false, false, false};
}

FlatAdamW::FlatAdamW(model::Llama& model, const AdamWOptions& opts, int world, int rank, Sharding sharding,
                     const model::ParamSource* source)
    : layout_(FlatLayout::build(model, world)), sharding_(sharding), rank_(rank), opts_(opts) {
  auto fopts = at::TensorOptions().dtype(at::kFloat).device(model.device());
  auto popts = fopts.dtype(model.dtype());
  std::int64_t owned = 0;
  for (std::size_t u = 0; u < layout_.units.size(); ++u) owned += layout_.chunk(u);

  params_ = at::zeros({sharding_.params ? owned : layout_.total}, popts);
  grads_ = at::zeros({sharding_.grads ? owned : layout_.total}, popts);
  m_ = at::zeros({sharding_.moments ? owned : layout_.total}, fopts);
  v_ = at::zeros({sharding_.moments ? owned : layout_.total}, fopts);
  plan_ranges();

  at::NoGradGuard ng;
  for (std::size_t u = 0; u < layout_.units.size(); ++u) {
    if (sharding_.params && source)
      read_chunk(u, *source);
    else if (sharding_.params)
      keep_chunk(u, model, popts);
    else
      bind_unit(u, model, source);
  }
  if (sharding_.params)
    for (const auto& slot : layout_.slots)
      model.set_parameter(slot.param, at::Tensor());  // gathered per unit while needed
}

// What this rank updates: everything (DDP) or its chunk of every unit.
void FlatAdamW::plan_ranges() {
  const bool any_sharded = sharding_.params || sharding_.grads || sharding_.moments;
  std::int64_t compact = 0;
  for (std::size_t u = 0; u < layout_.units.size(); ++u) {
    const auto& unit = layout_.units[u];
    const std::int64_t c = layout_.chunk(u);
    const std::int64_t flat = any_sharded ? unit.offset + rank_ * c : unit.offset;
    const std::int64_t len = any_sharded ? c : unit.padded;
    Range r{flat,
            len,
            sharding_.params ? compact : flat,
            sharding_.grads ? compact : flat,
            sharding_.moments ? compact : flat,
            {}};
    for (std::size_t s : unit.slots) {
      const auto& slot = layout_.slots[s];
      if (!slot.decay) continue;
      std::int64_t b = std::max(slot.offset, flat), e = std::min(slot.offset + slot.numel, flat + len);
      if (b < e) r.decay.push_back({b - flat, e - b});
    }
    ranges_.push_back(r);
    chunk_p_.push_back(sharding_.params ? compact : unit.offset + rank_ * c);
    chunk_g_.push_back(sharding_.grads ? compact : unit.offset + rank_ * c);
    compact += any_sharded ? c : 0;
  }
}

// Sharded parameters from a source: reads only this rank's chunk of the unit, the parts of
// the unit's parameters that fall in it.
void FlatAdamW::read_chunk(std::size_t u, const model::ParamSource& source) {
  const auto& unit = layout_.units[u];
  const std::int64_t c = layout_.chunk(u), first = unit.offset + rank_ * c;
  at::Tensor chunk = param_chunk(u);
  for (std::size_t s : unit.slots) {
    const auto& slot = layout_.slots[s];
    const std::int64_t b = std::max(slot.offset, first), e = std::min(slot.offset + slot.numel, first + c);
    if (b < e) source(slot.param, b - slot.offset, chunk.narrow(0, b - first, e - b));
  }
}

// Sharded parameters from the model: keeps this rank's chunk of the unit (the model's
// tensors are freed once every unit is done).
void FlatAdamW::keep_chunk(std::size_t u, const model::Llama& model, const at::TensorOptions& popts) {
  const auto& unit = layout_.units[u];
  const auto& ps = model.parameters();
  at::Tensor full = at::zeros({unit.padded}, popts);
  for (std::size_t s : unit.slots) {
    const auto& slot = layout_.slots[s];
    full.narrow(0, slot.offset - unit.offset, slot.numel).copy_(ps[slot.param].tensor.reshape({-1}));
  }
  param_chunk(u).copy_(full.narrow(0, rank_ * layout_.chunk(u), layout_.chunk(u)));
}

// Unsharded parameters: the unit's values (from the source or the model) into the flat
// buffer, and the model's parameters rebound to views of it (their .grad too, unless the
// gradients are sharded).
void FlatAdamW::bind_unit(std::size_t u, model::Llama& model, const model::ParamSource* source) {
  const auto& ps = model.parameters();
  for (std::size_t s : layout_.units[u].slots) {
    const auto& slot = layout_.slots[s];
    at::Tensor view = params_.narrow(0, slot.offset, slot.numel).view(slot.shape);
    if (source)
      (*source)(slot.param, 0, params_.narrow(0, slot.offset, slot.numel));
    else
      view.copy_(ps[slot.param].tensor);
    at::Tensor p = view.detach().requires_grad_(true);
    if (!sharding_.grads) p.mutable_grad() = grads_.narrow(0, slot.offset, slot.numel).view(slot.shape);
    model.set_parameter(slot.param, p);
  }
}

at::Tensor FlatAdamW::param_chunk(std::size_t unit) {
  return params_.narrow(0, chunk_p_[unit], layout_.chunk(unit));
}
at::Tensor FlatAdamW::grad_chunk(std::size_t unit) {
  return grads_.narrow(0, chunk_g_[unit], layout_.chunk(unit));
}
at::Tensor FlatAdamW::param_unit(std::size_t unit) {
  TORCH_CHECK(!sharding_.params, "param_unit: parameters are sharded");
  return params_.narrow(0, layout_.units[unit].offset, layout_.units[unit].padded);
}
at::Tensor FlatAdamW::grad_unit(std::size_t unit) {
  TORCH_CHECK(!sharding_.grads, "grad_unit: gradients are sharded");
  return grads_.narrow(0, layout_.units[unit].offset, layout_.units[unit].padded);
}

void FlatAdamW::zero_grad() { grads_.zero_(); }

bool FlatAdamW::fused() const {
  return params_.scalar_type() == at::kFloat && (force_fused_ || !params_.is_cpu());
}

std::int64_t FlatAdamW::step_count() const {
  return step_t_.defined() ? static_cast<std::int64_t>(step_t_.item<float>()) : step_;
}

void FlatAdamW::set_step_count(std::int64_t s) {
  step_ = s;
  if (step_t_.defined()) step_t_.fill_(static_cast<double>(s));
}

void FlatAdamW::fused_step(double lr, const at::Tensor& skip) {
  // The kernel reads the step count (bias corrections) from a device tensor, counted there:
  // +1, or +0 for a skipped step, which the kernel itself then leaves alone (found_inf).
  std::vector<at::Tensor> p[2], g[2], m[2], v[2];  // [0] no weight decay, [1] decayed (matrices)
  for (const auto& r : ranges_) {
    auto add = [&](std::int64_t from, std::int64_t to, int d) {
      if (to <= from) return;
      p[d].push_back(params_.narrow(0, r.p + from, to - from));
      g[d].push_back(grads_.narrow(0, r.g + from, to - from));
      m[d].push_back(m_.narrow(0, r.m + from, to - from));
      v[d].push_back(v_.narrow(0, r.m + from, to - from));
    };
    std::int64_t at = 0;
    for (const auto& [off, len] : r.decay) {
      add(at, off, 0);
      add(off, off + len, 1);
      at = off + len;
    }
    add(at, r.len, 0);
  }
  if (!step_t_.defined()) step_t_ = at::full({}, static_cast<double>(step_), params_.options());
  std::optional<at::Tensor> found_inf;
  if (skip.defined()) {
    found_inf = skip.to(params_.options());
    step_t_.add_(1.0 - *found_inf);
  } else {
    step_t_.add_(1.0);
  }
  for (int d = 0; d < 2; ++d)
    if (!p[d].empty())
      at::_fused_adamw_(p[d], g[d], m[d], v[d], {}, std::vector<at::Tensor>(p[d].size(), step_t_), lr,
                        opts_.beta1, opts_.beta2, d ? opts_.weight_decay : 0.0, opts_.eps, /*amsgrad=*/false,
                        /*maximize=*/false,
                        /*grad_scale=*/std::nullopt, found_inf);
}

double FlatAdamW::clip_grad_norm(double max_norm, dist::Context* ctx) {
  return clip_grad_norm_on_device(max_norm, ctx).item<double>();
}

at::Tensor FlatAdamW::clip_grad_norm_on_device(double max_norm, dist::Context* ctx) {
  // Norms per range (what this rank updates) accumulated in fp64, squared and summed in range
  // order, all-reduced in fp64 when the ranks update different ranges. fp64 makes the norm
  // independent of how the ranges are cut (whole units, or each rank's chunks) to ~1e-15, so
  // that ZeRO clips exactly as one process does (fp32 per-range norms differed by ~1e-5).
  // In blocks of 2^20 elements, so that the fp64 conversion holds 8 MiB at a time.
  constexpr std::int64_t kBlock = std::int64_t(1) << 20;
  at::Tensor sq = at::zeros({}, grads_.options().dtype(at::kDouble));
  for (const auto& r : ranges_)
    for (std::int64_t b = 0; b < r.len; b += kBlock) {
      at::Tensor n = at::linalg_vector_norm(grads_.narrow(0, r.g + b, std::min(kBlock, r.len - b)), 2,
                                            std::nullopt, false, at::kDouble);
      sq = sq + n * n;
    }
  if ((sharding_.grads || sharding_.moments) && ctx && ctx->distributed()) ctx->all_reduce_sum(sq);
  at::Tensor norm = sq.sqrt();
  if (max_norm > 0) {
    // min(1, coef): a multiplication by exactly 1 leaves the gradients' bits as they are,
    // and a non-finite norm (the step is skipped) scales nothing.
    at::Tensor coef =
        at::where(at::isfinite(norm), (at::full({}, max_norm, norm.options()) / (norm + 1e-6)).clamp_max(1.0),
                  at::ones_like(norm));
    // On the CPU a read costs nothing and spares a pass over every gradient when none is clipped.
    if (grads_.is_cpu() && coef.item<double>() >= 1.0) return norm;
    for (const auto& r : ranges_) grads_.narrow(0, r.g, r.len).mul_(coef);
  }
  return norm;
}

void FlatAdamW::step(double lr, const at::Tensor& skip) {
  at::NoGradGuard ng;
  if (fused()) {
    fused_step(lr, skip);
    return;
  }
  if (skip.defined() && skip.item<bool>()) return;
  ++step_;
  const double bc1 = 1.0 - std::pow(opts_.beta1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(opts_.beta2, static_cast<double>(step_));
  const bool fp32 = params_.scalar_type() == at::kFloat;
  if (fp32 && params_.is_cpu()) {
    const float decay = static_cast<float>(1.0 - lr * opts_.weight_decay);
    const float step_size = static_cast<float>(lr / bc1),
                inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
    const auto b1 = static_cast<float>(opts_.beta1), b2 = static_cast<float>(opts_.beta2);
    const auto eps = static_cast<float>(opts_.eps);
    float* P = params_.data_ptr<float>();
    float* G = grads_.data_ptr<float>();
    float* M = m_.data_ptr<float>();
    float* V = v_.data_ptr<float>();
    for (const auto& r : ranges_) {
      // Alternate undecayed and decayed sub-ranges (decay holds sorted, disjoint intervals).
      std::int64_t at = 0;
      auto run = [&](std::int64_t from, std::int64_t to, float d) {
        if (to > from)
          adamw_fp32(P + r.p + from, G + r.g + from, M + r.m + from, V + r.m + from, to - from, b1, b2, eps,
                     d, step_size, inv_sqrt_bc2);
      };
      for (const auto& [off, len] : r.decay) {
        run(at, off, 1.0f);
        run(off, off + len, opts_.weight_decay > 0 ? decay : 1.0f);
        at = off + len;
      }
      run(at, r.len, 1.0f);
    }
    return;
  }
  for (const auto& r : ranges_) {
    // bf16 weights: fp32 chunks of 4M elements (bounded temporaries), rounded back.
    const std::int64_t chunk = std::int64_t(1) << 22;
    for (std::int64_t b = 0; b < r.len; b += chunk) {
      const std::int64_t n = std::min(chunk, r.len - b);
      at::Tensor pv = params_.narrow(0, r.p + b, n);
      at::Tensor p = fp32 ? pv : pv.to(at::kFloat);
      at::Tensor g = fp32 ? grads_.narrow(0, r.g + b, n) : grads_.narrow(0, r.g + b, n).to(at::kFloat);
      at::Tensor m = m_.narrow(0, r.m + b, n);
      at::Tensor v = v_.narrow(0, r.m + b, n);
      // Decoupled weight decay on matrices only.
      if (opts_.weight_decay > 0)
        for (const auto& [off, len] : r.decay) {
          std::int64_t lo = std::max(off, b), hi = std::min(off + len, b + n);
          if (lo < hi) p.narrow(0, lo - b, hi - lo).mul_(1.0 - lr * opts_.weight_decay);
        }
      m.mul_(opts_.beta1).add_(g, 1.0 - opts_.beta1);
      v.mul_(opts_.beta2).addcmul_(g, g, 1.0 - opts_.beta2);
      at::Tensor denom = (v.sqrt() / std::sqrt(bc2)).add_(opts_.eps);
      p.addcdiv_(m, denom, -lr / bc1);
      if (!fp32) pv.copy_(p);
    }
  }
}

void FlatAdamW::reset_state() {
  m_.zero_();
  v_.zero_();
  set_step_count(0);
}

std::int64_t warmup_steps(double ratio, std::int64_t steps, std::int64_t total) {
  if (steps >= 0) return steps;
  return static_cast<std::int64_t>(std::ceil(ratio * static_cast<double>(total)));
}

double lr_at(config::Schedule schedule, double peak, double min_ratio, std::int64_t warmup,
             std::int64_t total, std::int64_t step) {
  if (step < warmup)
    return peak * static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, warmup));
  if (schedule == config::Schedule::kConstant) return peak;
  double progress =
      static_cast<double>(step - warmup) / static_cast<double>(std::max<std::int64_t>(1, total - warmup));
  progress = std::min(1.0, std::max(0.0, progress));
  double f = schedule == config::Schedule::kLinear ? 1.0 - progress : 0.5 * (1.0 + std::cos(M_PI * progress));
  return peak * (min_ratio + (1.0 - min_ratio) * f);
}

}  // namespace sft::train
