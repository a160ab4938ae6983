// Mixed precision: an RAII autocast scope (what Python's `with torch.autocast(...)` does).
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace sft::model {

// RAII: enables autocast to `dtype` on `device`'s type for its scope (no-op if !enabled),
// and restores the previous state afterwards, clearing the cast cache on the way out.
class AutocastGuard {
 public:
  AutocastGuard(c10::Device device, c10::ScalarType dtype, bool enabled);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false;
  c10::DeviceType type_ = c10::DeviceType::CPU;
  bool prev_enabled_ = false, prev_cache_ = true;
  c10::ScalarType prev_dtype_ = c10::kBFloat16;
};

// Whether autocast is currently on for this device type, and its dtype.
bool autocast_enabled(c10::DeviceType type);
c10::ScalarType autocast_dtype(c10::DeviceType type);

}  // namespace sft::model
