// Internal: what the fused layer kernels (sft/model/fused.h: fused_rms_norm.cpp,
// fused_swiglu.cpp, fused_qkv_rotary.cpp) share: the kernel attributes, fp32 <-> bf16 bits
// conversions that round as ATen does, the parallel grain, and which tensors take the
// fused path.
//
// The loops are written to auto-vectorise. On x86-64 each kernel is also built for AVX2 and
// AVX-512 and picked at load time, so one binary runs anywhere. Every file that includes this
// header is compiled (CMakeLists.txt lists them) with -ffp-contract=off (a fused multiply-add
// would round differently from ATen's mul then add) and -fno-trapping-math (without it GCC
// keeps float-to-int conversions scalar).
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SFT_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SFT_KERNEL
#endif
// Everything a kernel calls is inlined into it, so that it is compiled for the kernel's target.
#define SFT_INLINE inline __attribute__((always_inline))

namespace sft::model {

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
  if constexpr (std::is_same_v<T, float>)
    return f;
  else
    return static_cast<bf16>(bf16_rounded_bits(f) >> 16);
}
// The value rounded through T (as an ATen op producing a T tensor would leave it).
template <typename T>
SFT_INLINE float rnd(float f) {
  if constexpr (std::is_same_v<T, float>)
    return f;
  else
    return std::bit_cast<float>(bf16_rounded_bits(f));
}

// Rows per at::parallel_for task: about 16K elements' worth, at least one row.
inline std::int64_t grain_rows(std::int64_t width) {
  return std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(width, 1));
}

// Whether a tensor can take the fused path: on the CPU, in fp32 or bf16.
inline bool fusable(const at::Tensor& t) {
  return t.device().is_cpu() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16);
}

}  // namespace sft::model
