#include "sft/model/fused.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

// The loops are written to auto-vectorise. On x86-64 each kernel is also built for AVX2 and
// AVX-512 and picked at load time, so one binary runs anywhere. This file is compiled with
// -ffp-contract=off (a fused multiply-add would round differently from ATen's mul then add)
// and -fno-trapping-math (without it GCC keeps float-to-int conversions scalar).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SFT_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SFT_KERNEL
#endif
// Everything a kernel calls is inlined into it, so that it is compiled for the kernel's target.
#define SFT_INLINE inline __attribute__((always_inline))

namespace sft::model {
namespace {

using bf16 = std::uint16_t;  // raw bits; c10::BFloat16's conversions do not vectorise

SFT_INLINE float widen(float v) { return v; }
SFT_INLINE float widen(bf16 b) { return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16); }
// Round to nearest even, NaN to the quiet NaN: c10::BFloat16's rounding, kept in 32 bits
// (a 16-bit value in the middle of a float expression stops the loop vectorising).
SFT_INLINE std::uint32_t bf16_rounded_bits(float f) {
  const auto u = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  return (u & 0x7fffffffu) > 0x7f800000u ? 0x7fc00000u : r;
}
template <typename T>
SFT_INLINE T narrow_to(float f) {
  if constexpr (std::is_same_v<T, float>) return f;
  else return static_cast<bf16>(bf16_rounded_bits(f) >> 16);
}
// The value rounded through T (as an ATen op producing a T tensor would leave it).
template <typename T>
SFT_INLINE float rnd(float f) {
  if constexpr (std::is_same_v<T, float>) return f;
  else return std::bit_cast<float>(bf16_rounded_bits(f));
}

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

#define SFT_RMS_KERNELS(X, O, NAME)                                                                          \
  SFT_KERNEL void rms_forward_##NAME(const X* x, const X* w, O* y, float* rstd, std::int64_t rows,           \
                                     std::int64_t d, float eps) {                                            \
    rms_forward_rows(x, w, y, rstd, rows, d, eps);                                                           \
  }                                                                                                          \
  SFT_KERNEL void rms_backward_##NAME(const O* dy, const X* x, const X* w, const float* rstd, X* dx,         \
                                      float* dw, std::int64_t rows, std::int64_t d) {                        \
    rms_backward_rows(dy, x, w, rstd, dx, dw, rows, d);                                                      \
  }
SFT_RMS_KERNELS(float, float, f32_f32)
SFT_RMS_KERNELS(float, bf16, f32_bf16)
SFT_RMS_KERNELS(bf16, bf16, bf16_bf16)
SFT_RMS_KERNELS(bf16, float, bf16_f32)
#undef SFT_RMS_KERNELS

template <typename X, typename O>
void rms_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& y, const at::Tensor& rstd,
                 void (*kernel)(const X*, const X*, O*, float*, std::int64_t, std::int64_t, float), float eps) {
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
    if (!xb && !ob) rms_forward<float, float>(x, w, y, rstd, rms_forward_f32_f32, e);
    else if (!xb && ob) rms_forward<float, bf16>(x, w, y, rstd, rms_forward_f32_bf16, e);
    else if (xb && ob) rms_forward<bf16, bf16>(x, w, y, rstd, rms_forward_bf16_bf16, e);
    else rms_forward<bf16, float>(x, w, y, rstd, rms_forward_bf16_f32, e);
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
    if (!xb && !ob) rms_backward<float, float>(dy, x, w, rstd, dx, dw, rms_backward_f32_f32);
    else if (!xb && ob) rms_backward<float, bf16>(dy, x, w, rstd, dx, dw, rms_backward_f32_bf16);
    else if (xb && ob) rms_backward<bf16, bf16>(dy, x, w, rstd, dx, dw, rms_backward_bf16_bf16);
    else rms_backward<bf16, float>(dy, x, w, rstd, dx, dw, rms_backward_bf16_f32);
    return {dx, dw, at::Tensor(), at::Tensor()};
  }
};

// ---- SwiGLU ------------------------------------------------------------------------------

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
SFT_KERNEL void swiglu_backward_f32(const float* dy, const float* gu, float* dgu, std::int64_t rows, std::int64_t f) {
  swiglu_backward_rows(dy, gu, dgu, rows, f);
}
SFT_KERNEL void swiglu_backward_bf16(const bf16* dy, const bf16* gu, bf16* dgu, std::int64_t rows, std::int64_t f) {
  swiglu_backward_rows(dy, gu, dgu, rows, f);
}

std::int64_t grain_rows(std::int64_t width) { return std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(width, 1)); }

struct SwigluFn : public torch::autograd::Function<SwigluFn> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gu_in) {
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

// ---- q, k, v with rotary ---------------------------------------------------------------

// One position's tables, rounded to T as HF's cos.to(dtype) leaves them; q's also scaled.
template <typename T>
struct RopeRow {
  std::vector<float> c, s, cq, sq;
  explicit RopeRow(std::int64_t dh) : c(dh), s(dh), cq(dh), sq(dh) {}
  void load(const float* cos, const float* sin, std::int64_t dh, float scale) {
    for (std::int64_t i = 0; i < dh; ++i) {
      c[i] = rnd<T>(cos[i]);
      s[i] = rnd<T>(sin[i]);
      cq[i] = scale == 1.0f ? c[i] : rnd<T>(c[i] * scale);
      sq[i] = scale == 1.0f ? s[i] : rnd<T>(s[i] * scale);
    }
  }
};

// Rotary and its transpose, each product and the sum rounded to T. Forward:
// out = x * c + rotate_half(x) * s, where rotate_half(x)[i] = -x[i + h] below h, x[i - h] above.
// Transpose (the backward): dx = d * c + the rotate_half backward of d * s, which pairs the
// same elements with the partner's s and the opposite sign. Rounding is odd, so a sign
// applied after rounding is the chain's.
template <bool kTranspose, typename T>
SFT_INLINE void rotary_heads(const T* x, T* out, std::int64_t heads, std::int64_t dh, const float* c, const float* s) {
  const std::int64_t h = dh / 2;
  for (std::int64_t n = 0; n < heads; ++n) {
    const T* xr = x + n * dh;
    T* o = out + n * dh;
    for (std::int64_t i = 0; i < h; ++i) {
      const float partner = rnd<T>(widen(xr[i + h]) * s[kTranspose ? i + h : i]);
      o[i] = narrow_to<T>(rnd<T>(widen(xr[i]) * c[i]) + (kTranspose ? partner : -partner));
    }
    for (std::int64_t i = h; i < dh; ++i) {
      const float partner = rnd<T>(widen(xr[i - h]) * s[kTranspose ? i - h : i]);
      o[i] = narrow_to<T>(rnd<T>(widen(xr[i]) * c[i]) + (kTranspose ? -partner : partner));
    }
  }
}

#define SFT_ROTARY_KERNEL(NAME, T, TRANSPOSE)                                                                 \
  SFT_KERNEL void NAME(const T* x, T* o, std::int64_t n, std::int64_t dh, const float* c, const float* s) { \
    rotary_heads<TRANSPOSE>(x, o, n, dh, c, s);                                                                \
  }
SFT_ROTARY_KERNEL(rotate_heads_f32, float, false)
SFT_ROTARY_KERNEL(rotate_heads_bf16, bf16, false)
SFT_ROTARY_KERNEL(unrotate_heads_f32, float, true)
SFT_ROTARY_KERNEL(unrotate_heads_bf16, bf16, true)
#undef SFT_ROTARY_KERNEL

// Walks every (b, t) position: the rows of qkv-shaped `a` and of the three per-part tensors.
template <typename T, typename F>
void for_each_position(std::int64_t B, std::int64_t Tn, std::int64_t dh, std::int64_t width, const at::Tensor& cos,
                       const at::Tensor& sin, float scale, const F& f) {
  const float* cp = cos.const_data_ptr<float>();
  const float* sp = sin.const_data_ptr<float>();
  const bool per_batch = cos.size(0) != 1;
  at::parallel_for(0, B * Tn, grain_rows(width), [&](std::int64_t p0, std::int64_t p1) {
    RopeRow<T> row(dh);
    for (std::int64_t p = p0; p < p1; ++p) {
      const std::int64_t b = p / Tn, t = p % Tn, table = ((per_batch ? b : 0) * Tn + t) * dh;
      row.load(cp + table, sp + table, dh, scale);
      f(p, row);
    }
  });
}

struct QkvRotaryFn : public torch::autograd::Function<QkvRotaryFn> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& qkv_in,
                                                const at::Tensor& cos_in, const at::Tensor& sin_in, std::int64_t H,
                                                std::int64_t K, double q_scale) {
    at::Tensor qkv = qkv_in.contiguous(), cos = cos_in.contiguous(), sin = sin_in.contiguous();
    const std::int64_t B = qkv.size(0), Tn = qkv.size(1), dh = qkv.size(2) / (H + 2 * K);
    at::Tensor q = at::empty({B, Tn, H, dh}, qkv.options());
    at::Tensor k = at::empty({B, Tn, K, dh}, qkv.options());
    at::Tensor v = at::empty({B, Tn, K, dh}, qkv.options());
    const std::int64_t width = (H + 2 * K) * dh;
    const float scale = static_cast<float>(q_scale);
    const auto es = qkv.element_size();
    auto* base = static_cast<const char*>(qkv.const_data_ptr());
    auto *qp = static_cast<char*>(q.data_ptr()), *kp = static_cast<char*>(k.data_ptr()),
         *vp = static_cast<char*>(v.data_ptr());
    auto run = [&](auto tag) {
      using T = decltype(tag);
      for_each_position<T>(B, Tn, dh, width, cos, sin, scale, [&](std::int64_t p, const RopeRow<T>& r) {
        const T* row = reinterpret_cast<const T*>(base + p * width * es);
        T* qo = reinterpret_cast<T*>(qp) + p * H * dh;
        T* ko = reinterpret_cast<T*>(kp) + p * K * dh;
        if constexpr (std::is_same_v<T, float>) {
          rotate_heads_f32(row, qo, H, dh, r.cq.data(), r.sq.data());
          rotate_heads_f32(row + H * dh, ko, K, dh, r.c.data(), r.s.data());
        } else {
          rotate_heads_bf16(row, qo, H, dh, r.cq.data(), r.sq.data());
          rotate_heads_bf16(row + H * dh, ko, K, dh, r.c.data(), r.s.data());
        }
        std::memcpy(reinterpret_cast<T*>(vp) + p * K * dh, row + (H + K) * dh, K * dh * sizeof(T));
      });
    };
    if (qkv.scalar_type() == at::kBFloat16) run(bf16{});
    else run(float{});
    ctx->save_for_backward({cos, sin});
    ctx->saved_data["shape"] = std::vector<std::int64_t>{B, Tn, H, K, dh};
    ctx->saved_data["scale"] = q_scale;
    ctx->saved_data["bf16"] = qkv.scalar_type() == at::kBFloat16;
    return {q, k, v};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto shape = ctx->saved_data["shape"].toIntVector();
    const std::int64_t B = shape[0], Tn = shape[1], H = shape[2], K = shape[3], dh = shape[4];
    const float scale = static_cast<float>(ctx->saved_data["scale"].toDouble());
    const bool is_bf16 = ctx->saved_data["bf16"].toBool();
    const auto opts = saved[0].options().dtype(is_bf16 ? at::kBFloat16 : at::kFloat);
    auto grad = [&](std::size_t i, std::int64_t heads) {
      return grads[i].defined() ? grads[i].to(opts.dtype()).contiguous() : at::zeros({B, Tn, heads, dh}, opts);
    };
    at::Tensor dq = grad(0, H), dk = grad(1, K), dv = grad(2, K);
    const std::int64_t width = (H + 2 * K) * dh;
    at::Tensor dqkv = at::empty({B, Tn, width}, opts);
    const auto es = dqkv.element_size();
    auto* base = static_cast<char*>(dqkv.data_ptr());
    auto *qp = static_cast<const char*>(dq.const_data_ptr()), *kp = static_cast<const char*>(dk.const_data_ptr()),
         *vp = static_cast<const char*>(dv.const_data_ptr());
    auto run = [&](auto tag) {
      using T = decltype(tag);
      for_each_position<T>(B, Tn, dh, width, saved[0], saved[1], scale, [&](std::int64_t p, const RopeRow<T>& r) {
        T* row = reinterpret_cast<T*>(base + p * width * es);
        const T* qi = reinterpret_cast<const T*>(qp) + p * H * dh;
        const T* ki = reinterpret_cast<const T*>(kp) + p * K * dh;
        if constexpr (std::is_same_v<T, float>) {
          unrotate_heads_f32(qi, row, H, dh, r.cq.data(), r.sq.data());
          unrotate_heads_f32(ki, row + H * dh, K, dh, r.c.data(), r.s.data());
        } else {
          unrotate_heads_bf16(qi, row, H, dh, r.cq.data(), r.sq.data());
          unrotate_heads_bf16(ki, row + H * dh, K, dh, r.c.data(), r.s.data());
        }
        std::memcpy(row + (H + K) * dh, reinterpret_cast<const T*>(vp) + p * K * dh, K * dh * sizeof(T));
      });
    };
    if (is_bf16) run(bf16{});
    else run(float{});
    return {dqkv, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

bool fusable(const at::Tensor& t) {
  return t.device().is_cpu() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16);
}

}  // namespace

at::Tensor reference_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, c10::ScalarType out) {
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

at::Tensor reference_swiglu(const at::Tensor& gate_up) {
  const auto parts = gate_up.split(gate_up.size(-1) / 2, -1);
  return at::silu(parts[0]) * parts[1];
}

at::Tensor fused_swiglu(const at::Tensor& gate_up) {
  if (!fusable(gate_up) || gate_up.size(-1) % 2 || gate_up.numel() == 0) return reference_swiglu(gate_up);
  return SwigluFn::apply(gate_up)[0];
}

std::array<at::Tensor, 3> reference_qkv_rotary(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                                               std::int64_t H, std::int64_t K, double q_scale) {
  const std::int64_t B = qkv.size(0), T = qkv.size(1), Dh = qkv.size(2) / (H + 2 * K);
  const auto parts = qkv.split_with_sizes({H * Dh, K * Dh, K * Dh}, -1);
  at::Tensor q = parts[0].view({B, T, H, Dh}).transpose(1, 2);
  at::Tensor k = parts[1].view({B, T, K, Dh}).transpose(1, 2);
  at::Tensor v = parts[2].view({B, T, K, Dh}).transpose(1, 2);
  auto rotate_half = [](const at::Tensor& x) {
    auto halves = x.chunk(2, -1);
    return at::cat({-halves[1], halves[0]}, -1);
  };
  at::Tensor c = cos.to(q.scalar_type()), s = sin.to(q.scalar_type());
  q = q_scale == 1.0 ? q * c + rotate_half(q) * s : q * (c * q_scale) + rotate_half(q) * (s * q_scale);
  k = k * c + rotate_half(k) * s;
  return {q, k, v};
}

std::array<at::Tensor, 3> fused_qkv_rotary(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                                           std::int64_t H, std::int64_t K, double q_scale) {
  const std::int64_t B = qkv.size(0), T = qkv.size(1);
  const bool ok = fusable(qkv) && qkv.dim() == 3 && cos.dim() == 4 && cos.scalar_type() == at::kFloat &&
                  sin.sizes() == cos.sizes() && sin.scalar_type() == at::kFloat && cos.device() == qkv.device() &&
                  (cos.size(0) == 1 || cos.size(0) == B) && cos.size(1) == 1 && cos.size(2) == T &&
                  qkv.size(2) % (H + 2 * K) == 0 && cos.size(3) == qkv.size(2) / (H + 2 * K) &&
                  cos.size(3) % 2 == 0 && qkv.numel() > 0;
  if (!ok) return reference_qkv_rotary(qkv, cos, sin, H, K, q_scale);
  auto out = QkvRotaryFn::apply(qkv, cos, sin, H, K, q_scale);
  return {out[0].transpose(1, 2), out[1].transpose(1, 2), out[2].transpose(1, 2)};
}

}  // namespace sft::model
