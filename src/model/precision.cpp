#include "sft/model/precision.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

// LibTorch 2.4 replaced the per-device autocast setters with device-typed ones.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define SFT_AUTOCAST_DEVICE_API 1
#else
#define SFT_AUTOCAST_DEVICE_API 0
#endif

namespace sft::model {

bool autocast_enabled(c10::DeviceType type) {
#if SFT_AUTOCAST_DEVICE_API
  return at::autocast::is_autocast_enabled(type);
#else
  return type == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

c10::ScalarType autocast_dtype(c10::DeviceType type) {
#if SFT_AUTOCAST_DEVICE_API
  return at::autocast::get_autocast_dtype(type);
#else
  return type == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
#endif
}

namespace {
void set_autocast(bool cuda, bool enabled, c10::ScalarType dtype) {
  c10::DeviceType type = cuda ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
#if SFT_AUTOCAST_DEVICE_API
  at::autocast::set_autocast_dtype(type, dtype);
  at::autocast::set_autocast_enabled(type, enabled);
#else
  (void)type;
  if (cuda) {
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(enabled);
  } else {
    at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(enabled);
  }
#endif
}
}  // namespace

AutocastGuard::AutocastGuard(c10::Device device, c10::ScalarType dtype, bool enabled) {
  if (!enabled) return;
  active_ = true;
  cuda_ = device.is_cuda();
  c10::DeviceType type = cuda_ ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
  prev_enabled_ = autocast_enabled(type);
  prev_dtype_ = autocast_dtype(type);
  set_autocast(cuda_, true, dtype);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast(cuda_, prev_enabled_, prev_dtype_);
}

}  // namespace sft::model
