#include "sft/train/progress.h"
#include "sft/util/log.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace sft::train {

Progress::Progress(bool enabled, std::int64_t total_steps)
    : enabled_(enabled), tty_(enabled && ::isatty(2)), total_(total_steps) {}

std::string Progress::format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  long t = static_cast<long>(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

void Progress::clear_bar() {
  if (tty_ && bar_shown_) {
    std::fputs("\r\033[2K", stderr);
    bar_shown_ = false;
  }
}

void Progress::update(const ProgressState& s) {
  if (!tty_) return;
  const int width = 24;
  double frac = total_ > 0 ? static_cast<double>(s.global_step) / static_cast<double>(total_) : 0.0;
  int filled = static_cast<int>(frac * width);
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar += std::string(static_cast<std::size_t>(width - filled), '.');
  std::fprintf(
      stderr, "\r\033[2K[%s] %3.0f%% stage %d/%d %s %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s | ETA %s",
      bar.c_str(), 100.0 * frac, s.stage + 1, s.stages, s.stage_name.c_str(), static_cast<long long>(s.step),
      static_cast<long long>(s.steps), s.loss, s.lr, tokens_per_s_, format_duration(s.eta_s).c_str());
  std::fflush(stderr);
  bar_shown_ = true;
}

void Progress::log_line(const ProgressState& s, double tokens_per_s) {
  if (!enabled_) return;
  tokens_per_s_ = tokens_per_s;
  clear_bar();
  sft::log::info(
      "stage {}/{} {} | step {}/{} | loss {:.4f} | lr {:.2e} | grad {:.3f} | {:.0f} tok/s | ETA {}",
      s.stage + 1, s.stages, s.stage_name, s.step, s.steps, s.loss, s.lr, s.grad_norm, tokens_per_s,
      format_duration(s.eta_s));
}

void Progress::finish_stage() { clear_bar(); }

}  // namespace sft::train
