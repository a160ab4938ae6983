// The run's log, metrics.jsonl and TensorBoard scalars (run_log.h).
#include "sft/train/run_log.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "sft/train/progress.h"
#include "sft/train/tfevents.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/log.h"
#include "sft/util/safe_io.h"

namespace sft::train {
namespace {

double wall_clock_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

RunLog::RunLog(const config::RunConfig& cfg, std::vector<std::int64_t> stage_steps, bool writes)
    : cfg_(cfg),
      stage_steps_(std::move(stage_steps)),
      writes_(writes),
      metrics_path_(fs::join(cfg.output_dir, "metrics.jsonl")),
      run_start_(Clock::now()),
      window_start_(run_start_) {
  if (writes_) tb_ = std::make_unique<TfEventsWriter>(fs::join(cfg.output_dir, "tensorboard"));
}

RunLog::~RunLog() = default;

void RunLog::truncate_after(std::int64_t global_step) {
  if (!writes_ || !fs::exists(metrics_path_)) return;
  std::istringstream in(fs::read_file(metrics_path_));
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).value("step", std::int64_t(0)) > global_step) continue;
    } catch (...) {
      continue;  // a torn last line
    }
    kept += line + "\n";
  }
  fs::write_file_atomic(metrics_path_, kept);
}

void RunLog::start(std::int64_t global_step, std::int64_t total_steps) {
  run_start_ = Clock::now();
  start_step_ = global_step;
  total_steps_ = total_steps;
  progress_ = std::make_unique<Progress>(writes_, total_steps);
}

void RunLog::begin_stage(int) {
  first_loss_ = last_loss_ = NAN;
  window_loss_ = 0;
  window_trained_tokens_ = window_tokens_ = window_steps_ = 0;
  window_comm_ms_ = window_comm_wait_ms_ = 0;
  window_start_ = Clock::now();
}

void RunLog::step(const StepFigures& f, bool write, std::int64_t peak_memory_bytes) {
  if (std::isnan(first_loss_)) first_loss_ = f.loss;
  last_loss_ = f.loss;
  window_loss_ += f.loss * static_cast<double>(f.trained_tokens);
  window_trained_tokens_ += f.trained_tokens;
  window_tokens_ += f.tokens;
  window_comm_ms_ += f.comm_ms;
  window_comm_wait_ms_ += f.comm_wait_ms;
  ++window_steps_;
  const double elapsed = elapsed_s();
  const double eta = elapsed / static_cast<double>(std::max<std::int64_t>(1, f.global_step - start_step_)) *
                     static_cast<double>(total_steps_ - f.global_step);
  const std::string& name = cfg_.stages[static_cast<std::size_t>(f.stage)].name;
  ProgressState ps{f.stage,
                   static_cast<int>(stage_steps_.size()),
                   name,
                   f.step + 1,
                   stage_steps_[static_cast<std::size_t>(f.stage)],
                   f.global_step,
                   f.loss,
                   f.lr,
                   f.grad_norm,
                   eta};
  progress_->update(ps);
  if (!write) return;

  const double secs = std::chrono::duration<double>(Clock::now() - window_start_).count();
  const double tps = secs > 0 ? static_cast<double>(window_tokens_) / secs : 0.0;
  ps.loss = window_trained_tokens_ ? window_loss_ / static_cast<double>(window_trained_tokens_) : f.loss;
  progress_->log_line(ps, tps);
  if (writes_) {
    record({{"event", "step"},
            {"step", f.global_step},
            {"stage", name},
            {"stage_index", f.stage},
            {"stage_step", f.step + 1},
            {"epoch", f.epoch},
            {"loss", ps.loss},
            {"lr", f.lr},
            {"grad_norm", f.grad_norm},
            {"tokens_per_s", tps},
            {"elapsed_s", elapsed},
            {"peak_memory_mb", static_cast<double>(peak_memory_bytes) / 1048576.0},
            {"comm_ms", window_comm_ms_ / static_cast<double>(window_steps_)},
            {"comm_wait_ms", window_comm_wait_ms_ / static_cast<double>(window_steps_)}});
    const double wall = wall_clock_s();
    tb_->scalar("train/loss", ps.loss, f.global_step, wall);
    tb_->scalar("train/lr", f.lr, f.global_step, wall);
    tb_->scalar("train/grad_norm", f.grad_norm, f.global_step, wall);
    tb_->scalar("train/tokens_per_s", tps, f.global_step, wall);
    tb_->flush();
  }
  window_loss_ = 0;
  window_trained_tokens_ = window_tokens_ = window_steps_ = 0;
  window_comm_ms_ = window_comm_wait_ms_ = 0;
  window_start_ = Clock::now();
}

void RunLog::end_stage(int stage, std::int64_t global_step, bool ran) {
  progress_->finish_stage();
  if (!writes_) return;
  const std::string& name = cfg_.stages[static_cast<std::size_t>(stage)].name;
  if (ran)
    sft::log::info("stage {}/{} {} done: loss {:.4f} -> {:.4f}", stage + 1, stage_steps_.size(), name,
                   first_loss_, last_loss_);
  record({{"event", "stage_end"},
          {"stage", name},
          {"stage_index", stage},
          {"step", global_step},
          {"first_loss", first_loss_},
          {"last_loss", last_loss_}});
}

void RunLog::record(const nlohmann::json& rec) {
  if (!writes_) return;
  const int fd = fs::open_append(metrics_path_);  // never through a link
  const std::string line = rec.dump() + "\n";
  const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  if (!ok) throw Error(metrics_path_ + ": write failed");
}

void RunLog::scalar(const std::string& tag, double value, std::int64_t global_step) {
  if (!writes_) return;
  tb_->scalar(tag, value, global_step, wall_clock_s());
  tb_->flush();
}

double RunLog::elapsed_s() const { return std::chrono::duration<double>(Clock::now() - run_start_).count(); }

}  // namespace sft::train
