#include "sft/train/stop_signal.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <ctime>
#include <cstring>

namespace sft::train {
namespace {

std::atomic<int> g_count{0};
std::atomic<int> g_signal{0};
std::atomic<std::int64_t> g_first_ns{0};

std::int64_t now_ns() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);  // async-signal-safe
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void handler(int sig) {
  // A scheduler that signals every process of a job (scancel, systemd) while a parent
  // (sft sweep) also forwards the signal delivers it twice: within a second it is one request.
  if (g_count.load() >= 1 && now_ns() - g_first_ns.load() < 1000000000) return;
  if (g_count.fetch_add(1) >= 1) {
    const char msg[] = "\nsft: second signal, exiting now without saving\n";
    ssize_t ignored = ::write(2, msg, sizeof msg - 1);
    (void)ignored;
    ::_exit(128 + sig);
  }
  g_signal.store(sig);
  g_first_ns.store(now_ns());
  const char msg[] =
      "\nsft: stop requested; finishing the current step and saving a checkpoint "
      "(signal again to exit at once)\n";
  ssize_t ignored = ::write(2, msg, sizeof msg - 1);
  (void)ignored;
}

}  // namespace

void StopSignal::install() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

bool StopSignal::requested() { return g_count.load() > 0; }
int StopSignal::signal_number() { return g_signal.load(); }
void StopSignal::clear() {
  g_count.store(0);
  g_signal.store(0);
}

}  // namespace sft::train
