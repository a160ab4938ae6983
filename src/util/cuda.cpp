#include "sft/util/cuda.h"

#include <cstdlib>
#include <fstream>
#include <regex>

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
namespace {

std::string cuda_version_text(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

// The oldest Linux driver of each CUDA major (the CUDA toolkit release notes' driver table).
std::string min_driver_for(int cuda_major) {
  if (cuda_major == 12) return "525.60.13";
  if (cuda_major == 13) return "580.65.06";
  return "";
}

}  // namespace

std::string driver_mismatch(int driver_cuda, int runtime_cuda, const std::string& driver_release) {
  if (runtime_cuda <= 0) return "";
  const std::string runtime = cuda_version_text(runtime_cuda);
  if (driver_cuda <= 0)
    return "no NVIDIA driver was found (libcuda.so.1 did not load), so this LibTorch (CUDA " + runtime +
           ") sees no GPU; on a GPU node, check nvidia-smi";
  const int driver_major = driver_cuda / 1000, runtime_major = runtime_cuda / 1000;
  if (driver_major >= runtime_major) return "";  // minor version compatibility covers the rest
  const std::string needs = min_driver_for(runtime_major);
  std::string msg = "the NVIDIA driver " + (driver_release.empty() ? std::string() : driver_release + " ") +
                    "supports CUDA ≤ " + cuda_version_text(driver_cuda) +
                    ", this LibTorch was built for CUDA " + runtime +
                    (needs.empty() ? "" : " (it needs a driver ≥ " + needs + ")") + ": ";
  if (driver_major >= 12)
    msg += "build sft against a LibTorch for CUDA " + std::to_string(driver_major) +
           " (torch from PyTorch's cu" + std::to_string(driver_major) +
           "x index, e.g. https://download.pytorch.org/whl/cu" +
           (driver_major == 12 ? std::string("126") : std::to_string(driver_major) + "0") +
           ", in SFT_VENV; a libtorch zip; or a cluster module: README, \"On a cluster\"), or have the "
           "driver updated";
  else
    msg +=
        "have the driver updated (≥ 525.60.13 runs a LibTorch for CUDA 12, ≥ 580.65.06 one for CUDA 13); "
        "no LibTorch sft builds against (2.11 or newer) is made for CUDA " +
        std::to_string(driver_major);
  return msg;
}

#if SFT_WITH_CUDA

bool compiled() { return true; }
bool available() { return c10::cuda::device_count() > 0; }
int device_count() { return static_cast<int>(c10::cuda::device_count()); }

std::string runtime_version() {
  long v = at::detail::getCUDAHooks().versionCUDART();  // e.g. 13000
  if (v <= 0) return "";
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

bool driver_found() {
  int v = 0;
  return cudaDriverGetVersion(&v) == cudaSuccess && v > 0;
}

std::string unavailable_reason() {
  if (available()) return "";
  int driver = 0, runtime = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  if (cudaRuntimeGetVersion(&runtime) != cudaSuccess) runtime = 0;
  // "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.129.03  Thu Oct 19 ..."
  std::string release;
  std::ifstream proc("/proc/driver/nvidia/version");
  std::string line;
  std::smatch m;
  if (std::getline(proc, line) && std::regex_search(line, m, std::regex(R"(\s(\d+\.\d+(\.\d+)?)\s)")))
    release = m[1];
  std::string why = driver_mismatch(driver, runtime, release);
  if (!why.empty()) return why;
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  return "the NVIDIA driver" + (release.empty() ? std::string() : " " + release) + " (CUDA " +
         cuda_version_text(driver) +
         ") sees no GPU: check nvidia-smi, the job's GPU request (Slurm --gpus-per-node) and "
         "CUDA_VISIBLE_DEVICES (" +
         (visible ? "\"" + std::string(visible) + "\"" : std::string("unset")) + ")";
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
  c10::DeviceIndex device = 0;
  // cudaEventDefault records timing; CUDAEvent's own default flags would disable it.
  at::cuda::CUDAEvent begin{cudaEventDefault}, end{cudaEventDefault};
};

EventTimer::EventTimer(c10::Device device) {
  if (!device.is_cuda()) throw Error("EventTimer needs a CUDA device, got " + device.str());
  impl_ = std::make_unique<Impl>();
  impl_->device = device.has_index() ? device.index() : c10::cuda::current_device();
}

// On the timed device's stream: record() alone would use the current device's.
void EventTimer::start() { impl_->begin.record(c10::cuda::getCurrentCUDAStream(impl_->device)); }

double EventTimer::stop_ms() {
  impl_->end.record(c10::cuda::getCurrentCUDAStream(impl_->device));
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
  impl_->host.copy_(t, /*non_blocking=*/true);  // queued on t's device's current stream
  impl_->copied = std::make_unique<at::cuda::CUDAEvent>();
  impl_->copied->record(c10::cuda::getCurrentCUDAStream(t.device().index()));
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
bool driver_found() { return false; }
std::string unavailable_reason() { return "sft was built without CUDA (SFT_CUDA=OFF)"; }
std::string device_name(int) { return ""; }
void set_device(int index) {
  throw Error("CUDA device " + std::to_string(index) +
              " requested, but sft was built without CUDA (SFT_CUDA=OFF)");
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
