#include "sft/model/precision.h"

#include <ATen/autocast_mode.h>

namespace sft::model {

bool autocast_enabled(c10::DeviceType type) { return at::autocast::is_autocast_enabled(type); }

c10::ScalarType autocast_dtype(c10::DeviceType type) { return at::autocast::get_autocast_dtype(type); }

namespace {
void set_autocast(c10::DeviceType type, bool enabled, c10::ScalarType dtype) {
  at::autocast::set_autocast_dtype(type, dtype);
  at::autocast::set_autocast_enabled(type, enabled);
}
}  // namespace

AutocastGuard::AutocastGuard(c10::Device device, c10::ScalarType dtype, bool enabled) {
  if (!enabled) return;
  active_ = true;
  type_ = device.type();
  prev_enabled_ = autocast_enabled(type_);
  prev_dtype_ = autocast_dtype(type_);
  set_autocast(type_, true, dtype);
  // No cast cache: each weight is cast once per forward anyway, and the cache would keep the
  // bf16 copy of every weight used as-is (o_proj, down_proj: ~20 GB at 33B) until the forward
  // ends, which activation checkpointing exists to avoid.
  prev_cache_ = at::autocast::is_autocast_cache_enabled();
  at::autocast::set_autocast_cache_enabled(false);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast(type_, prev_enabled_, prev_dtype_);
  at::autocast::set_autocast_cache_enabled(prev_cache_);
}

}  // namespace sft::model
