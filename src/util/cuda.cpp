#include "sft/util/cuda.h"

#include "sft/util/error.h"

#if SFT_WITH_CUDA
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

namespace sft::cuda {

#if SFT_WITH_CUDA

bool compiled() { return true; }
bool available() { return c10::cuda::device_count() > 0; }
int device_count() { return static_cast<int>(c10::cuda::device_count()); }

std::string runtime_version() {
  long v = at::detail::getCUDAHooks().versionCUDART();  // e.g. 13000
  if (v <= 0) return "";
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

std::string device_name(int index) {
  if (!available()) return "";
  return at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(index))->name;
}

void set_device(int index) {
  if (index < 0 || index >= device_count())
    throw Error("CUDA device " + std::to_string(index) + " does not exist (this machine has " +
                std::to_string(device_count()) + "); check LOCAL_RANK and CUDA_VISIBLE_DEVICES");
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(index));
}

void synchronize(c10::Device device) {
  if (device.is_cuda()) c10::cuda::device_synchronize();
}

MemoryStats memory_stats(int index) {
  if (!available()) return {};
  auto s = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(index));
  constexpr std::size_t kAggregate = 0;  // StatType::AGGREGATE: all pools together
  return {s.allocated_bytes[kAggregate].current, s.allocated_bytes[kAggregate].peak,
          s.reserved_bytes[kAggregate].current, s.reserved_bytes[kAggregate].peak};
}

void reset_peak_memory(int index) {
  if (available()) c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(index));
}

std::int64_t free_memory(int index) {
  if (!available()) return 0;
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(index));
  std::size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) != cudaSuccess) return 0;
  return static_cast<std::int64_t>(free);
}

struct EventTimer::Impl {
  // cudaEventDefault records timing; CUDAEvent's own default flags would disable it.
  at::cuda::CUDAEvent begin{cudaEventDefault}, end{cudaEventDefault};
};

EventTimer::EventTimer(c10::Device device) {
  if (!device.is_cuda()) throw Error("EventTimer needs a CUDA device, got " + device.str());
  impl_ = std::make_unique<Impl>();
}

void EventTimer::start() { impl_->begin.record(); }

double EventTimer::stop_ms() {
  impl_->end.record();
  impl_->end.synchronize();
  return impl_->begin.elapsed_time(impl_->end);
}

struct HostRead::Impl {
  at::Tensor host;
  std::unique_ptr<at::cuda::CUDAEvent> copied;  // none for a CPU tensor
};

HostRead::HostRead(const at::Tensor& t) : impl_(std::make_shared<Impl>()) {
  if (!t.is_cuda()) {
    impl_->host = t;
    return;
  }
  impl_->host = at::empty(t.sizes(), t.options().device(c10::kCPU).pinned_memory(true));
  impl_->host.copy_(t, /*non_blocking=*/true);
  impl_->copied = std::make_unique<at::cuda::CUDAEvent>();
  impl_->copied->record();
}

bool HostRead::ready() const { return !impl_->copied || impl_->copied->query(); }

at::Tensor HostRead::get() const {
  if (impl_->copied) impl_->copied->synchronize();
  return impl_->host;
}

#else  // built without CUDA

struct HostRead::Impl {
  at::Tensor host;
};
HostRead::HostRead(const at::Tensor& t) : impl_(std::make_shared<Impl>(Impl{t})) {}
bool HostRead::ready() const { return true; }
at::Tensor HostRead::get() const { return impl_->host; }

bool compiled() { return false; }
bool available() { return false; }
int device_count() { return 0; }
std::string runtime_version() { return ""; }
std::string device_name(int) { return ""; }
void set_device(int index) {
  throw Error("CUDA device " + std::to_string(index) + " requested, but sft was built without CUDA (SFT_CUDA=OFF)");
}
void synchronize(c10::Device) {}
MemoryStats memory_stats(int) { return {}; }
void reset_peak_memory(int) {}
std::int64_t free_memory(int) { return 0; }

struct EventTimer::Impl {};
EventTimer::EventTimer(c10::Device device) {
  throw Error("EventTimer needs CUDA, but sft was built without it (device " + device.str() + ")");
}
void EventTimer::start() {}
double EventTimer::stop_ms() { return 0.0; }

#endif

EventTimer::~EventTimer() = default;

}  // namespace sft::cuda
