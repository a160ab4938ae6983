// A timeline of a stretch of training steps, recorded by LibTorch's profiler (Kineto) and
// written as the Chrome trace JSON that torch.profiler writes: chrome://tracing and
// https://ui.perfetto.dev open it. It shows the compute (each ATen operator; on a GPU each
// kernel on its stream), each collective from launch to completion ("gloo:broadcast",
// "nccl:all_gather", ...), and sft's own spans: "sft::launch <collective>" where a
// collective is started and "sft::wait <collective>" where the compute waits for one.
//
// One recorder at a time per process (the profiler is process-wide).
#pragma once

#include <c10/core/Device.h>

#include <string>

namespace sft::train {

class TraceRecorder {
 public:
  explicit TraceRecorder(c10::Device device) : device_(device) {}
  ~TraceRecorder();  // stops a recording that is still on, writing nothing
  void start();
  // Stops recording and writes the trace to `path` (its folder must exist).
  void stop_and_save(const std::string& path);
  bool active() const { return active_; }

 private:
  c10::Device device_;
  bool active_ = false;
};

}  // namespace sft::train
