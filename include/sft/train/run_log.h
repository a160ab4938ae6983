// RunLog: everything a run reports as it goes, in one place: the progress bar and log lines,
// metrics.jsonl records and TensorBoard scalars. Rank 0's writes; every other rank's is
// silent, so that the trainer calls it the same way on every rank.
//
// Step lines report the window since the last one: its mean loss per trained token, its
// throughput and its communication times per step (comm_ms, comm_wait_ms: means over the
// window's steps); the bar and the ETA move every step.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sft/config/run_config.h"

namespace sft::train {

class Progress;
class TfEventsWriter;

// One finished step's figures, read back from the device.
struct StepFigures {
  int stage = 0;
  std::int64_t step = 0;         // within the stage, from 0
  std::int64_t global_step = 0;  // steps completed, this one included
  std::int64_t epoch = 0;        // of the stage's data
  double loss = 0, lr = 0, grad_norm = 0;
  std::int64_t tokens = 0, trained_tokens = 0;  // over all ranks
  // This rank's communication in the step (dist::Context::CommTimes): collectives in flight,
  // and the compute waiting for them.
  double comm_ms = 0, comm_wait_ms = 0;
};

class RunLog {
 public:
  // REQUIRES: cfg.output_dir exists; stage_steps[s] is stage s's step count.
  RunLog(const config::RunConfig& cfg, std::vector<std::int64_t> stage_steps, bool writes);
  ~RunLog();

  // A resumed run rewrites what followed its checkpoint: records past `global_step` go.
  void truncate_after(std::int64_t global_step);
  // The run (or its resumption) starts at `global_step` of `total_steps`: the ETA counts from here.
  void start(std::int64_t global_step, std::int64_t total_steps);
  void begin_stage(int stage);
  // Every finite step: the bar; when `write`, the log line, a metrics record and TensorBoard.
  void step(const StepFigures& f, bool write, std::int64_t peak_memory_bytes);
  // The stage's first and last finite loss (NaN when none), its "done" line when it `ran`
  // here, and its stage_end record.
  void end_stage(int stage, std::int64_t global_step, bool ran);
  double stage_first_loss() const { return first_loss_; }
  double stage_last_loss() const { return last_loss_; }
  // Any other metrics.jsonl record (build, eval, memory, end).
  void record(const nlohmann::json& rec);
  void scalar(const std::string& tag, double value, std::int64_t global_step);  // TensorBoard, flushed
  double elapsed_s() const;
  bool writes() const { return writes_; }

 private:
  const config::RunConfig& cfg_;
  std::vector<std::int64_t> stage_steps_;
  bool writes_;
  std::string metrics_path_;
  std::unique_ptr<Progress> progress_;
  std::unique_ptr<TfEventsWriter> tb_;
  using Clock = std::chrono::steady_clock;
  Clock::time_point run_start_, window_start_;
  std::int64_t start_step_ = 0, total_steps_ = 0;
  double first_loss_ = 0, last_loss_ = 0;
  double window_loss_ = 0;  // sum of loss x trained_tokens
  std::int64_t window_trained_tokens_ = 0, window_tokens_ = 0, window_steps_ = 0;
  double window_comm_ms_ = 0, window_comm_wait_ms_ = 0;
};

}  // namespace sft::train
