// CUDA as sft sees it (util/cuda.h): the driver/runtime check through its seam (any
// version pair, on any machine), and, on a machine with two GPUs, that HostRead and
// EventTimer work on their tensor's / device's stream rather than the current device's.
#include "sft/util/cuda.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#if SFT_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace sft::cuda {
namespace {

TEST(DriverMismatch, ADriverOlderThanTheRuntimeNamesBothAndWhatToInstall) {
  // A cluster on driver 535 (CUDA 12.2) with the pinned torch 2.14.1+cu130.
  const std::string m = driver_mismatch(/*driver_cuda=*/12020, /*runtime_cuda=*/13000, "535.129.03");
  EXPECT_EQ(m.rfind("the NVIDIA driver 535.129.03 supports CUDA ≤ 12.2, this LibTorch was built for CUDA "
                    "13.0 (it needs "
                    "a driver ≥ 580.65.06): build sft against a LibTorch for CUDA 12",
                    0),
            0u)
      << m;
  EXPECT_NE(m.find("https://download.pytorch.org/whl/cu126"), std::string::npos) << m;
  EXPECT_NE(m.find("README, \"On a cluster\""), std::string::npos) << m;
  // Without the release (no /proc/driver/nvidia/version) the sentence still reads.
  EXPECT_EQ(driver_mismatch(12040, 13000).rfind("the NVIDIA driver supports CUDA ≤ 12.4, this LibTorch", 0),
            0u);
  // A driver too old for any LibTorch sft builds against.
  const std::string old = driver_mismatch(11040, 12060, "470.82.01");
  EXPECT_NE(
      old.find(
          "supports CUDA ≤ 11.4, this LibTorch was built for CUDA 12.6 (it needs a driver ≥ 525.60.13): have "
          "the driver updated"),
      std::string::npos)
      << old;
}

TEST(DriverMismatch, TheSameMajorOrANewerDriverIsNoMismatch) {
  EXPECT_EQ(driver_mismatch(13000, 13000), "");
  EXPECT_EQ(driver_mismatch(13000, 13020), "");  // minor version compatibility
  EXPECT_EQ(driver_mismatch(13020, 12080), "");
  EXPECT_EQ(driver_mismatch(12090, 12060), "");
  EXPECT_EQ(driver_mismatch(12020, 0), "");  // runtime unknown: nothing to compare
}

TEST(DriverMismatch, NoDriverAtAllSaysSo) {
  EXPECT_EQ(driver_mismatch(0, 13000),
            "no NVIDIA driver was found (libcuda.so.1 did not load), so this LibTorch (CUDA 13.0) sees no "
            "GPU; on a GPU "
            "node, check nvidia-smi");
}

TEST(UnavailableReason, IsEmptyExactlyWhenAGpuIsAvailable) {
  const std::string why = unavailable_reason();
  EXPECT_EQ(why.empty(), available()) << why;
  if (!compiled()) EXPECT_EQ(why, "sft was built without CUDA (SFT_CUDA=OFF)");
  if (compiled() && !available() && !driver_found())
    EXPECT_NE(why.find("no NVIDIA driver was found"), std::string::npos) << why;
}

#if SFT_WITH_CUDA
// Work queued on GPU 1 while GPU 0 is current: long enough that reading too early shows.
at::Tensor busy_sum_on(int gpu) {
  auto opts = at::TensorOptions().device(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(gpu)));
  at::Tensor a = at::randn({4096, 4096}, opts);
  for (int i = 0; i < 20; ++i) a = at::tanh(a.matmul(a) / 64.0);
  return a.sum();
}

TEST(HostRead, WaitsForTheCopyOnTheTensorsDeviceNotTheCurrentOne) {
  if (device_count() < 2) GTEST_SKIP() << "needs two GPUs (the copy on GPU 1, GPU 0 current)";
  set_device(0);
  for (int trial = 0; trial < 5; ++trial) {
    at::Tensor s = busy_sum_on(1);
    HostRead r(s);
    const float early = r.get().item<float>();  // waits for the copy's event only
    EXPECT_EQ(early, s.item<float>()) << "HostRead returned before the copy on cuda:1 was done";
  }
}

TEST(EventTimer, TimesTheWorkOfItsDeviceNotTheCurrentOne) {
  if (device_count() < 2) GTEST_SKIP() << "needs two GPUs (timing GPU 1, GPU 0 current)";
  set_device(0);
  EventTimer timer(c10::Device(c10::kCUDA, 1));
  timer.start();
  busy_sum_on(1);
  const double ms = timer.stop_ms();
  EXPECT_GT(ms, 1.0) << "the events did not bracket GPU 1's work";
  EXPECT_EQ(c10::cuda::current_device(), 0);
}
#endif

}  // namespace
}  // namespace sft::cuda
