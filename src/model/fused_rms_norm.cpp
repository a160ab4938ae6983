// The fused RMSNorm (sft/model/fused.h): its forward and backward kernels, the autograd
// Function that runs them, and the ATen chain it matches (reference_rms_norm).
#include "sft/model/fused.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

#include "fused_kernels.h"

namespace sft::model {
namespace {

// ---- RMSNorm -------------------------------------------------------------------------------

constexpr std::int64_t kRowBlock = 32;  // rows per partial weight-gradient sum

template <typename X>
SFT_INLINE float sum_squares(const X* x, std::int64_t d) {
  float acc[16] = {};
  std::int64_t i = 0;
  for (; i + 16 <= d; i += 16)
    for (int l = 0; l < 16; ++l) {
      const float v = widen(x[i + l]);
      acc[l] += v * v;
    }
  for (; i < d; ++i) acc[i % 16] += widen(x[i]) * widen(x[i]);
  float s = 0;
  for (float a : acc) s += a;
  return s;
}

template <typename X, typename O>
SFT_INLINE void rms_forward_rows(const X* x, const X* w, O* y, float* rstd, std::int64_t rows, std::int64_t d,
                                 float eps) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const X* xr = x + r * d;
    O* yr = y + r * d;
    const float s = 1.0f / std::sqrt(sum_squares(xr, d) / static_cast<float>(d) + eps);
    rstd[r] = s;
    for (std::int64_t i = 0; i < d; ++i) yr[i] = narrow_to<O>(rnd<X>(widen(w[i]) * rnd<X>(widen(xr[i]) * s)));
  }
}

// dx = rstd * (g - x * rstd^2 * mean(g * x)), g = dy * w; dw += dy * (x * rstd rounded to X).
template <typename X, typename O>
SFT_INLINE void rms_backward_rows(const O* dy, const X* x, const X* w, const float* rstd, X* dx, float* dw,
                                  std::int64_t rows, std::int64_t d) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const O* dyr = dy + r * d;
    const X* xr = x + r * d;
    X* dxr = dx + r * d;
    const float s = rstd[r];
    float acc[16] = {};
    std::int64_t i = 0;
    for (; i + 16 <= d; i += 16)
      for (int l = 0; l < 16; ++l) acc[l] += widen(dyr[i + l]) * widen(w[i + l]) * widen(xr[i + l]);
    for (; i < d; ++i) acc[i % 16] += widen(dyr[i]) * widen(w[i]) * widen(xr[i]);
    float dot = 0;
    for (float a : acc) dot += a;
    const float c = s * s * s * dot / static_cast<float>(d);
    for (std::int64_t j = 0; j < d; ++j) {
      const float xv = widen(xr[j]), dv = widen(dyr[j]);
      dxr[j] = narrow_to<X>(s * (dv * widen(w[j])) - c * xv);
      dw[j] += dv * rnd<X>(xv * s);
    }
  }
}

#define SFT_RMS_KERNELS(X, O, NAME)                                                                  \
  SFT_KERNEL void rms_forward_##NAME(const X* x, const X* w, O* y, float* rstd, std::int64_t rows,   \
                                     std::int64_t d, float eps) {                                    \
    rms_forward_rows(x, w, y, rstd, rows, d, eps);                                                   \
  }                                                                                                  \
  SFT_KERNEL void rms_backward_##NAME(const O* dy, const X* x, const X* w, const float* rstd, X* dx, \
                                      float* dw, std::int64_t rows, std::int64_t d) {                \
    rms_backward_rows(dy, x, w, rstd, dx, dw, rows, d);                                              \
  }
SFT_RMS_KERNELS(float, float, f32_f32)
SFT_RMS_KERNELS(float, bf16, f32_bf16)
SFT_RMS_KERNELS(bf16, bf16, bf16_bf16)
SFT_RMS_KERNELS(bf16, float, bf16_f32)
#undef SFT_RMS_KERNELS

template <typename X, typename O>
void rms_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& y, const at::Tensor& rstd,
                 void (*kernel)(const X*, const X*, O*, float*, std::int64_t, std::int64_t, float),
                 float eps) {
  const std::int64_t d = x.size(-1), rows = x.numel() / std::max<std::int64_t>(d, 1);
  const auto* xp = static_cast<const X*>(x.const_data_ptr());
  const auto* wp = static_cast<const X*>(w.const_data_ptr());
  auto* yp = static_cast<O*>(y.data_ptr());
  auto* rp = rstd.data_ptr<float>();
  at::parallel_for(0, rows, kRowBlock, [&](std::int64_t b, std::int64_t e) {
    kernel(xp + b * d, wp, yp + b * d, rp + b, e - b, d, eps);
  });
}

template <typename X, typename O>
void rms_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w, const at::Tensor& rstd,
                  const at::Tensor& dx, at::Tensor& dw,
                  void (*kernel)(const O*, const X*, const X*, const float*, X*, float*, std::int64_t,
                                 std::int64_t)) {
  const std::int64_t d = x.size(-1), rows = x.numel() / std::max<std::int64_t>(d, 1);
  const std::int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  at::Tensor partial = at::zeros({std::max<std::int64_t>(blocks, 1), d}, x.options().dtype(at::kFloat));
  const auto* dyp = static_cast<const O*>(dy.const_data_ptr());
  const auto* xp = static_cast<const X*>(x.const_data_ptr());
  const auto* wp = static_cast<const X*>(w.const_data_ptr());
  const float* rp = rstd.const_data_ptr<float>();
  auto* dxp = static_cast<X*>(dx.data_ptr());
  float* pp = partial.data_ptr<float>();
  at::parallel_for(0, blocks, 1, [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t b = b0; b < b1; ++b) {
      const std::int64_t r0 = b * kRowBlock, n = std::min(kRowBlock, rows - r0);
      kernel(dyp + r0 * d, xp + r0 * d, wp, rp + r0, dxp + r0 * d, pp + b * d, n, d);
    }
  });
  // The blocks summed in order: the same gradient at any thread count.
  at::Tensor total = at::zeros({d}, x.options().dtype(at::kFloat));
  float* tp = total.data_ptr<float>();
  for (std::int64_t b = 0; b < blocks; ++b)
    for (std::int64_t j = 0; j < d; ++j) tp[j] += pp[b * d + j];
  dw = total.to(w.scalar_type());
}

struct RmsNormFn : public torch::autograd::Function<RmsNormFn> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x_in,
                                                const at::Tensor& w, double eps, c10::ScalarType out) {
    at::Tensor x = x_in.contiguous();
    const std::int64_t d = x.size(-1);
    at::Tensor y = at::empty(x.sizes(), x.options().dtype(out));
    at::Tensor rstd = at::empty({x.numel() / std::max<std::int64_t>(d, 1)}, x.options().dtype(at::kFloat));
    const float e = static_cast<float>(eps);
    const bool xb = x.scalar_type() == at::kBFloat16, ob = out == at::kBFloat16;
    if (!xb && !ob)
      rms_forward<float, float>(x, w, y, rstd, rms_forward_f32_f32, e);
    else if (!xb && ob)
      rms_forward<float, bf16>(x, w, y, rstd, rms_forward_f32_bf16, e);
    else if (xb && ob)
      rms_forward<bf16, bf16>(x, w, y, rstd, rms_forward_bf16_bf16, e);
    else
      rms_forward<bf16, float>(x, w, y, rstd, rms_forward_bf16_f32, e);
    ctx->save_for_backward({x, w, rstd});
    return {y};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &rstd = saved[2];
    at::Tensor dy = grads[0].contiguous();
    at::Tensor dx = at::empty_like(x), dw;
    const bool xb = x.scalar_type() == at::kBFloat16, ob = dy.scalar_type() == at::kBFloat16;
    if (!xb && !ob)
      rms_backward<float, float>(dy, x, w, rstd, dx, dw, rms_backward_f32_f32);
    else if (!xb && ob)
      rms_backward<float, bf16>(dy, x, w, rstd, dx, dw, rms_backward_f32_bf16);
    else if (xb && ob)
      rms_backward<bf16, bf16>(dy, x, w, rstd, dx, dw, rms_backward_bf16_bf16);
    else
      rms_backward<bf16, float>(dy, x, w, rstd, dx, dw, rms_backward_bf16_f32);
    return {dx, dw, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor reference_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps,
                              c10::ScalarType out) {
  at::Tensor x32 = x.to(at::kFloat);
  at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (weight * normed.to(x.scalar_type())).to(out);
}

at::Tensor fused_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, c10::ScalarType out) {
  const bool ok = fusable(x) && weight.scalar_type() == x.scalar_type() && weight.device() == x.device() &&
                  weight.dim() == 1 && weight.size(0) == x.size(-1) && weight.is_contiguous() &&
                  (out == at::kFloat || out == at::kBFloat16) && x.numel() > 0;
  if (!ok) return reference_rms_norm(x, weight, eps, out);
  return RmsNormFn::apply(x, weight, eps, out)[0];
}

}  // namespace sft::model
