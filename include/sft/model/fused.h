// The decoder layer's element-wise work as three fused CPU kernels, each one pass forward
// and one backward, with autograd. HF's op-by-op form (RMSNorm's pow/mean/rsqrt/mul/cast/
// mul, rotary's chunk/neg/cat/mul/mul/add, SiLU times up) makes ~20 passes per layer over
// memory, each an allocation and a parallel region; on the tiny models those passes, not
// the GEMMs, set the step time.
//
// Each kernel rounds where HF's chain rounds (to the tensors' dtype after each op), so in
// bf16 the results match the chain's except where a sum or exp is computed in another
// order: RMSNorm's sum of squares, SiLU's exp (its own polynomial, within 1 ulp).
// The rotary kernel is bit-exact with the chain in fp32 and bf16, forward and backward.
// Weight gradients are reduced over fixed blocks of rows, so results do not depend on the
// thread count.
//
// CPU tensors in fp32 or bf16 take the fused path; anything else (CUDA, fp16, other
// layouts) runs the ATen chain, the `reference_*` functions below, which tests compare with.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>

namespace sft::model {

// HF LlamaRMSNorm: weight * (x * rsqrt(mean(x^2) + eps) in fp32, rounded to x's dtype),
// returned in `out` (autocast's compute dtype saves the separate cast). x (..., D).
at::Tensor fused_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, c10::ScalarType out);
at::Tensor reference_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, c10::ScalarType out);

// silu(gate) * up for gate_up = [gate | up] along the last dim: (..., 2F) -> (..., F).
at::Tensor fused_swiglu(const at::Tensor& gate_up);
at::Tensor reference_swiglu(const at::Tensor& gate_up);

// q, k and v from the fused projection qkv (B, T, (H + 2K) * Dh), q and k rotated by
// cos/sin ((1 or B), 1, T, Dh), fp32, HF's rotate_half convention, the tables rounded to
// qkv's dtype as HF casts them; q also scaled by q_scale (folded into its tables).
// Returned as (B, heads, T, Dh) views of (B, T, heads, Dh) tensors, as the split made them.
std::array<at::Tensor, 3> fused_qkv_rotary(const at::Tensor& qkv, const at::Tensor& cos,
                                           const at::Tensor& sin, std::int64_t heads, std::int64_t kv_heads,
                                           double q_scale);
std::array<at::Tensor, 3> reference_qkv_rotary(const at::Tensor& qkv, const at::Tensor& cos,
                                               const at::Tensor& sin, std::int64_t heads,
                                               std::int64_t kv_heads, double q_scale);

}  // namespace sft::model
