// Counts the bytes LibTorch holds on the CPU: a thin allocator installed in front of the
// default CPU allocator that keeps the current and peak number of live tensor bytes.
// Used to check the dry-run planner's estimates against a measured run, and by `sft bench`.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <string>

namespace sft::train {

class CpuMemoryTracker {
 public:
  static void install();  // idempotent; tensors allocated before it are not counted
  static bool installed();
  static std::int64_t current_bytes();
  static std::int64_t peak_bytes();
  static void reset_peak();  // peak := current
};

// Peak bytes held by live tensors on `device` since the last reset: the CPU tracker's count,
// or the CUDA caching allocator's allocated peak on a GPU.
std::int64_t peak_tensor_bytes(c10::Device device);
std::int64_t current_tensor_bytes(c10::Device device);  // live now, same sources
void reset_peak_tensor_bytes(c10::Device device);

// One rank's peak tensor bytes per phase of a run (load, forward_backward, optimizer, export,
// eval), each above the baseline live when the meter was made (before the model was built),
// as the dry-run planner plans them. A phase's peak is the most held between begin() and
// end(), the largest over its occurrences. The meter owns the device's peak counter: the
// run's overall peak is run_peak(), not peak_tensor_bytes().
class PhaseMeter {
 public:
  explicit PhaseMeter(c10::Device device);
  void begin();
  void end(const std::string& phase);
  void record(const std::string& phase, std::int64_t bytes);  // measured elsewhere, above the baseline
  const std::map<std::string, std::int64_t>& peaks() const { return peaks_; }
  std::int64_t baseline() const { return baseline_; }
  std::int64_t run_peak() const;  // absolute, since the meter was made

 private:
  c10::Device device_;
  std::int64_t baseline_ = 0, run_peak_ = 0;
  std::map<std::string, std::int64_t> peaks_;
};

}  // namespace sft::train
