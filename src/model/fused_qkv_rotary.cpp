// The fused split of q, k and v with rotary embeddings (sft/model/fused.h): the rotary
// kernel and its transpose, the autograd Function that runs them, and the ATen chain it
// matches (reference_qkv_rotary).
#include "sft/model/fused.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstring>
#include <vector>

#include "fused_kernels.h"

namespace sft::model {
namespace {

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
SFT_INLINE void rotary_heads(const T* x, T* out, std::int64_t heads, std::int64_t dh, const float* c,
                             const float* s) {
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

#define SFT_ROTARY_KERNEL(NAME, T, TRANSPOSE)                                                               \
  SFT_KERNEL void NAME(const T* x, T* o, std::int64_t n, std::int64_t dh, const float* c, const float* s) { \
    rotary_heads<TRANSPOSE>(x, o, n, dh, c, s);                                                             \
  }
SFT_ROTARY_KERNEL(rotate_heads_f32, float, false)
SFT_ROTARY_KERNEL(rotate_heads_bf16, bf16, false)
SFT_ROTARY_KERNEL(unrotate_heads_f32, float, true)
SFT_ROTARY_KERNEL(unrotate_heads_bf16, bf16, true)
#undef SFT_ROTARY_KERNEL

// Walks every (b, t) position: the rows of qkv-shaped `a` and of the three per-part tensors.
template <typename T, typename F>
void for_each_position(std::int64_t B, std::int64_t Tn, std::int64_t dh, std::int64_t width,
                       const at::Tensor& cos, const at::Tensor& sin, float scale, const F& f) {
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
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& qkv_in, const at::Tensor& cos_in,
                                                const at::Tensor& sin_in, std::int64_t H, std::int64_t K,
                                                double q_scale) {
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
    if (qkv.scalar_type() == at::kBFloat16)
      run(bf16{});
    else
      run(float{});
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
      return grads[i].defined() ? grads[i].to(opts.dtype()).contiguous()
                                : at::zeros({B, Tn, heads, dh}, opts);
    };
    at::Tensor dq = grad(0, H), dk = grad(1, K), dv = grad(2, K);
    const std::int64_t width = (H + 2 * K) * dh;
    at::Tensor dqkv = at::empty({B, Tn, width}, opts);
    const auto es = dqkv.element_size();
    auto* base = static_cast<char*>(dqkv.data_ptr());
    auto *qp = static_cast<const char*>(dq.const_data_ptr()),
         *kp = static_cast<const char*>(dk.const_data_ptr()),
         *vp = static_cast<const char*>(dv.const_data_ptr());
    auto run = [&](auto tag) {
      using T = decltype(tag);
      for_each_position<T>(
          B, Tn, dh, width, saved[0], saved[1], scale, [&](std::int64_t p, const RopeRow<T>& r) {
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
    if (is_bf16)
      run(bf16{});
    else
      run(float{});
    return {dqkv, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

std::array<at::Tensor, 3> reference_qkv_rotary(const at::Tensor& qkv, const at::Tensor& cos,
                                               const at::Tensor& sin, std::int64_t H, std::int64_t K,
                                               double q_scale) {
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

std::array<at::Tensor, 3> fused_qkv_rotary(const at::Tensor& qkv, const at::Tensor& cos,
                                           const at::Tensor& sin, std::int64_t H, std::int64_t K,
                                           double q_scale) {
  const std::int64_t B = qkv.size(0), T = qkv.size(1);
  const bool ok = fusable(qkv) && qkv.dim() == 3 && cos.dim() == 4 && cos.scalar_type() == at::kFloat &&
                  sin.sizes() == cos.sizes() && sin.scalar_type() == at::kFloat &&
                  cos.device() == qkv.device() && (cos.size(0) == 1 || cos.size(0) == B) &&
                  cos.size(1) == 1 && cos.size(2) == T && qkv.size(2) % (H + 2 * K) == 0 &&
                  cos.size(3) == qkv.size(2) / (H + 2 * K) && cos.size(3) % 2 == 0 && qkv.numel() > 0;
  if (!ok) return reference_qkv_rotary(qkv, cos, sin, H, K, q_scale);
  auto out = QkvRotaryFn::apply(qkv, cos, sin, H, K, q_scale);
  return {out[0].transpose(1, 2), out[1].transpose(1, 2), out[2].transpose(1, 2)};
}

}  // namespace sft::model
