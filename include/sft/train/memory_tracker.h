// Counts the bytes LibTorch holds on the CPU: a thin allocator installed in front of the
// default CPU allocator that keeps the current and peak number of live tensor bytes.
// Used to check the dry-run planner's estimates against a measured run, and by `sft bench`.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>

namespace sft::train {

class CpuMemoryTracker {
 public:
  static void install();  // idempotent; tensors allocated before it are not counted
  static bool installed();
  static std::int64_t current_bytes();
  static std::int64_t peak_bytes();
  static void reset_peak();  // peak := current
};

// Peak bytes held by live tensors on `device` since the last reset: the CPU tracker's count,
// or the CUDA caching allocator's allocated peak on a GPU.
std::int64_t peak_tensor_bytes(c10::Device device);
std::int64_t current_tensor_bytes(c10::Device device);  // live now, same sources
void reset_peak_tensor_bytes(c10::Device device);

}  // namespace sft::train
