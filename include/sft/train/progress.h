// What the user sees while training: on a terminal, one progress bar redrawn every step
// (stage, step/total, loss, lr, tokens/s, ETA) with the periodic log lines printed above
// it; otherwise (logs, Slurm) only the plain log lines every train.log_every steps.
#pragma once

#include <cstdint>
#include <string>

namespace sft::train {

struct ProgressState {
  int stage = 0, stages = 1;
  std::string stage_name;
  std::int64_t step = 0, steps = 0, global_step = 0;
  double loss = 0, lr = 0, grad_norm = 0, eta_s = 0;
};

class Progress {
 public:
  Progress(bool enabled, std::int64_t total_steps);
  void update(const ProgressState& s);                         // every step (terminal only)
  void log_line(const ProgressState& s, double tokens_per_s);  // every log_every steps
  void finish_stage();
  static std::string format_duration(double seconds);

 private:
  void clear_bar();
  bool enabled_, tty_;
  std::int64_t total_;
  bool bar_shown_ = false;
  double tokens_per_s_ = 0;
};

}  // namespace sft::train
