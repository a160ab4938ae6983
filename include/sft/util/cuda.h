// CUDA as sft sees it: whether it was compiled in, the device a rank uses, the caching
// allocator's memory statistics and event timing. Every function is safe to call in a
// build without CUDA (configured with SFT_CUDA=OFF) or on a machine without a GPU: it then reports
// "none" (zeros, false) or throws sft::Error where a GPU is required.
//
// All CUDA headers stay inside src/util/cuda.cpp (and src/dist/context.cpp for NCCL).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>

namespace sft::cuda {

bool compiled();                // sft built with SFT_CUDA=ON (LibTorch has CUDA)
bool available();               // compiled() and at least one GPU is usable
int device_count();             // 0 when !available()
std::string runtime_version();  // CUDA runtime LibTorch was built with, e.g. "13.0"; "" if none
std::string device_name(int index);

// Why no GPU is usable although CUDA is compiled in: the NVIDIA driver is missing, or older
// than this LibTorch's CUDA runtime, or it sees no GPU. "" when a GPU is available, and
// "sft was built without CUDA (SFT_CUDA=OFF)" in a build without CUDA. Reads the versions
// with cudaDriverGetVersion / cudaRuntimeGetVersion and the driver's release from
// /proc/driver/nvidia/version.
std::string unavailable_reason();
bool driver_found();  // cudaDriverGetVersion reports a driver (false in a build without CUDA)

// The version check itself, on given versions (the seam the CPU tests use). Versions are
// encoded as CUDA encodes them, 1000 * major + 10 * minor (12020 is 12.2); 0 means none.
// Returns "" when the driver runs this runtime (same major or newer: CUDA's minor version
// compatibility), else "the NVIDIA driver <release> supports CUDA ≤ <driver>, this LibTorch
// was built for CUDA <runtime> ..." with what to install instead. `driver_release` ("535.129.03")
// may be empty.
std::string driver_mismatch(int driver_cuda, int runtime_cuda, const std::string& driver_release = "");

// Makes `index` this thread's current device (before creating an NCCL process group, so
// that NCCL and the caching allocator bind to the rank's own GPU).
void set_device(int index);
// Waits for all work queued on `device` (no-op on the CPU).
void synchronize(c10::Device device);

// The caching allocator's statistics for one GPU, in bytes. "allocated" is what live
// tensors hold; "reserved" is what the allocator took from the driver (what nvidia-smi
// shows, less the CUDA context).
struct MemoryStats {
  std::int64_t allocated = 0, allocated_peak = 0;
  std::int64_t reserved = 0, reserved_peak = 0;
};
MemoryStats memory_stats(int index);  // zeros when !available()
void reset_peak_memory(int index);
std::int64_t free_memory(int index);  // cudaMemGetInfo's free bytes on GPU `index`; 0 when !available()

// GPU time between start() and stop(), from CUDA events on `device`'s current stream (not
// the current device's: the host does not wait in start(); stop() synchronises on the end
// event). `cuda` without an index means the current device when the timer is made.
class EventTimer {
 public:
  explicit EventTimer(c10::Device device);
  ~EventTimer();
  void start();
  double stop_ms();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A small tensor's values on the host without waiting for the GPU's later work: the copy to
// pinned host memory is queued when it is made, on the tensor's device's current stream, and
// get() waits for that copy only (an event recorded after it on that stream, whatever the
// current device is), not for what was queued since. For a CPU tensor, get() is it.
class HostRead {
 public:
  HostRead() = default;
  explicit HostRead(const at::Tensor& t);
  bool pending() const { return static_cast<bool>(impl_); }
  bool ready() const;      // get() would not wait. REQUIRES: pending()
  at::Tensor get() const;  // REQUIRES: pending()

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace sft::cuda
