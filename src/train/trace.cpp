#include "sft/train/trace.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <set>

#include "sft/util/error.h"
#include "sft/util/log.h"

namespace sft::train {
namespace {

namespace prof = torch::profiler::impl;

prof::ProfilerConfig config() { return prof::ProfilerConfig(prof::ProfilerState::KINETO); }

std::set<prof::ActivityType> activities(c10::Device device) {
  std::set<prof::ActivityType> a = {prof::ActivityType::CPU};
  if (device.is_cuda()) a.insert(prof::ActivityType::CUDA);
  return a;
}

}  // namespace

TraceRecorder::~TraceRecorder() {
  if (!active_) return;
  try {
    torch::autograd::profiler::disableProfiler();
  } catch (const std::exception&) {
  }
}

void TraceRecorder::start() {
  if (active_) return;
  torch::autograd::profiler::prepareProfiler(config(), activities(device_));
  torch::autograd::profiler::enableProfiler(config(), activities(device_));
  active_ = true;
}

void TraceRecorder::stop_and_save(const std::string& path) {
  if (!active_) return;
  active_ = false;
  std::unique_ptr<torch::autograd::profiler::ProfilerResult> result =
      torch::autograd::profiler::disableProfiler();
  if (!result) throw Error(path + ": the profiler returned no trace");
  result->save(path);
}

}  // namespace sft::train
