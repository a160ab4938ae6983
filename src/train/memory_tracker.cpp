#include "sft/train/memory_tracker.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "sft/util/cuda.h"

namespace sft::train {
namespace {

std::atomic<std::int64_t> g_current{0}, g_peak{0};
std::atomic<bool> g_installed{false};

// Live allocations by address. The DataPtr context stays the data pointer itself, as
// Allocator::raw_allocate() requires, so the size is looked up here on release.
std::mutex g_mutex;
std::unordered_map<void*, std::int64_t>* g_sizes = nullptr;
c10::DeleterFnPtr g_base_deleter = nullptr;

void release(void* ptr) {
  if (!ptr) return;
  std::int64_t bytes = 0;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_sizes->find(ptr);
    if (it != g_sizes->end()) {
      bytes = it->second;
      g_sizes->erase(it);
    }
  }
  g_current.fetch_sub(bytes);
  g_base_deleter(ptr);
}

class TrackingAllocator final : public c10::Allocator {
 public:
  explicit TrackingAllocator(c10::Allocator* base) : base_(base) {}
  c10::DataPtr allocate(size_t n) override { return track(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }

 private:
  c10::DataPtr track(size_t n) const {
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    c10::Device dev = inner.device();
    inner.release_context();  // ownership moves to `release`, which calls the base deleter
    if (data) {
      std::lock_guard<std::mutex> lock(g_mutex);
      (*g_sizes)[data] = static_cast<std::int64_t>(n);
    }
    std::int64_t now = g_current.fetch_add(static_cast<std::int64_t>(n)) + static_cast<std::int64_t>(n);
    std::int64_t peak = g_peak.load();
    while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
    }
    return c10::DataPtr(data, data, &release, dev);
  }
  c10::Allocator* base_;
};

}  // namespace

void CpuMemoryTracker::install() {
  static std::once_flag once;
  std::call_once(once, [] {
    c10::Allocator* base = c10::GetDefaultCPUAllocator();
    g_base_deleter = base->raw_deleter();
    if (!g_base_deleter) return;  // the default allocator must free raw pointers; else do not track
    g_sizes = new std::unordered_map<void*, std::int64_t>();
    static TrackingAllocator tracker(base);
    c10::SetCPUAllocator(&tracker, /*priority=*/1);
    g_installed = true;
  });
}

bool CpuMemoryTracker::installed() { return g_installed.load(); }
std::int64_t CpuMemoryTracker::current_bytes() { return g_current.load(); }
std::int64_t CpuMemoryTracker::peak_bytes() { return g_peak.load(); }
void CpuMemoryTracker::reset_peak() { g_peak.store(g_current.load()); }

std::int64_t current_tensor_bytes(c10::Device device) {
  if (device.is_cuda()) return cuda::memory_stats(device.index()).allocated;
  return CpuMemoryTracker::current_bytes();
}

std::int64_t peak_tensor_bytes(c10::Device device) {
  if (device.is_cuda()) return cuda::memory_stats(device.index()).allocated_peak;
  return CpuMemoryTracker::peak_bytes();
}

void reset_peak_tensor_bytes(c10::Device device) {
  if (device.is_cuda())
    cuda::reset_peak_memory(device.index());
  else
    CpuMemoryTracker::reset_peak();
}

PhaseMeter::PhaseMeter(c10::Device device) : device_(device) {
  baseline_ = current_tensor_bytes(device_);
  reset_peak_tensor_bytes(device_);
  run_peak_ = baseline_;
}

void PhaseMeter::begin() {
  run_peak_ = std::max(run_peak_, peak_tensor_bytes(device_));
  reset_peak_tensor_bytes(device_);
}

void PhaseMeter::end(const std::string& phase) { record(phase, peak_tensor_bytes(device_) - baseline_); }

void PhaseMeter::record(const std::string& phase, std::int64_t bytes) {
  auto [it, fresh] = peaks_.emplace(phase, bytes);
  if (!fresh) it->second = std::max(it->second, bytes);
}

std::int64_t PhaseMeter::run_peak() const { return std::max(run_peak_, peak_tensor_bytes(device_)); }

}  // namespace sft::train
