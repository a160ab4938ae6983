// The fused SwiGLU, silu(gate) * up (sft/model/fused.h): its forward and backward kernels
// with their own vectorisable exp, the autograd Function that runs them, and the ATen chain
// it matches (reference_swiglu).
#include "sft/model/fused.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <vector>

#include "fused_kernels.h"

namespace sft::model {
namespace {

// exp for the SiLU: Cephes' range reduction and degree-6 polynomial, branch-free so it
// vectorises (libm's expf does not without -ffast-math). Within 1 ulp of exp.
SFT_INLINE float exp_approx(float x) {
  x = std::min(std::max(x, -87.3f), 88.0f);  // 2^n stays a normal float
  // nearbyint, not floor(v + 0.5): the same reduction, and floor's form ran 8x slower
  // vectorised on this project's Xeon (measured; cause not found).
  const float n = std::nearbyint(x * 1.44269504088896341f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  return p * std::bit_cast<float>(static_cast<std::uint32_t>(static_cast<std::int32_t>(n) + 127) << 23);
}

SFT_INLINE float sigmoid(float g) { return 1.0f / (1.0f + exp_approx(-g)); }

// y = silu(g) rounded, times u, rounded: ATen's silu then mul.
template <typename T>
SFT_INLINE void swiglu_forward_rows(const T* gu, T* y, std::int64_t rows, std::int64_t f) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* g = gu + r * 2 * f;
    const T* u = g + f;
    T* yr = y + r * f;
    for (std::int64_t i = 0; i < f; ++i) {
      const float gv = widen(g[i]);
      yr[i] = narrow_to<T>(rnd<T>(gv * sigmoid(gv)) * widen(u[i]));
    }
  }
}

// du = dy * silu(g); dg = silu'(g) * (dy * u): mul's backward, then silu's.
template <typename T>
SFT_INLINE void swiglu_backward_rows(const T* dy, const T* gu, T* dgu, std::int64_t rows, std::int64_t f) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* g = gu + r * 2 * f;
    const T* u = g + f;
    const T* dyr = dy + r * f;
    T* dg = dgu + r * 2 * f;
    T* du = dg + f;
    for (std::int64_t i = 0; i < f; ++i) {
      const float gv = widen(g[i]), d = widen(dyr[i]);
      const float sig = sigmoid(gv);
      du[i] = narrow_to<T>(d * rnd<T>(gv * sig));
      dg[i] = narrow_to<T>(rnd<T>(d * widen(u[i])) * sig * (1.0f + gv * (1.0f - sig)));
    }
  }
}

SFT_KERNEL void swiglu_forward_f32(const float* gu, float* y, std::int64_t rows, std::int64_t f) {
  swiglu_forward_rows(gu, y, rows, f);
}
SFT_KERNEL void swiglu_forward_bf16(const bf16* gu, bf16* y, std::int64_t rows, std::int64_t f) {
  swiglu_forward_rows(gu, y, rows, f);
}
SFT_KERNEL void swiglu_backward_f32(const float* dy, const float* gu, float* dgu, std::int64_t rows,
                                    std::int64_t f) {
  swiglu_backward_rows(dy, gu, dgu, rows, f);
}
SFT_KERNEL void swiglu_backward_bf16(const bf16* dy, const bf16* gu, bf16* dgu, std::int64_t rows,
                                     std::int64_t f) {
  swiglu_backward_rows(dy, gu, dgu, rows, f);
}

struct SwigluFn : public torch::autograd::Function<SwigluFn> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& gu_in) {
    at::Tensor gu = gu_in.contiguous();
    const std::int64_t f = gu.size(-1) / 2, rows = gu.numel() / std::max<std::int64_t>(2 * f, 1);
    std::vector<std::int64_t> shape(gu.sizes().begin(), gu.sizes().end());
    shape.back() = f;
    at::Tensor y = at::empty(shape, gu.options());
    const bool b = gu.scalar_type() == at::kBFloat16;
    at::parallel_for(0, rows, grain_rows(f), [&](std::int64_t r0, std::int64_t r1) {
      if (b)
        swiglu_forward_bf16(static_cast<const bf16*>(gu.const_data_ptr()) + r0 * 2 * f,
                            static_cast<bf16*>(y.data_ptr()) + r0 * f, r1 - r0, f);
      else
        swiglu_forward_f32(gu.const_data_ptr<float>() + r0 * 2 * f, y.data_ptr<float>() + r0 * f, r1 - r0, f);
    });
    ctx->save_for_backward({gu});
    return {y};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    at::Tensor gu = ctx->get_saved_variables()[0];
    at::Tensor dy = grads[0].to(gu.scalar_type()).contiguous();
    const std::int64_t f = gu.size(-1) / 2, rows = gu.numel() / std::max<std::int64_t>(2 * f, 1);
    at::Tensor dgu = at::empty_like(gu);
    const bool b = gu.scalar_type() == at::kBFloat16;
    at::parallel_for(0, rows, grain_rows(f), [&](std::int64_t r0, std::int64_t r1) {
      if (b)
        swiglu_backward_bf16(static_cast<const bf16*>(dy.const_data_ptr()) + r0 * f,
                             static_cast<const bf16*>(gu.const_data_ptr()) + r0 * 2 * f,
                             static_cast<bf16*>(dgu.data_ptr()) + r0 * 2 * f, r1 - r0, f);
      else
        swiglu_backward_f32(dy.const_data_ptr<float>() + r0 * f, gu.const_data_ptr<float>() + r0 * 2 * f,
                            dgu.data_ptr<float>() + r0 * 2 * f, r1 - r0, f);
    });
    return {dgu};
  }
};

}  // namespace

at::Tensor reference_swiglu(const at::Tensor& gate_up) {
  const auto parts = gate_up.split(gate_up.size(-1) / 2, -1);
  return at::silu(parts[0]) * parts[1];
}

at::Tensor fused_swiglu(const at::Tensor& gate_up) {
  if (!fusable(gate_up) || gate_up.size(-1) % 2 || gate_up.numel() == 0) return reference_swiglu(gate_up);
  return SwigluFn::apply(gate_up)[0];
}

}  // namespace sft::model
