#include "sft/train/stop_signal.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace sft::train {
namespace {

std::atomic<int> g_count{0};
std::atomic<int> g_signal{0};

void handler(int sig) {
  if (g_count.fetch_add(1) >= 1) {
    const char msg[] = "\nsft: second signal, exiting now without saving\n";
    ssize_t ignored = ::write(2, msg, sizeof msg - 1);
    (void)ignored;
    ::_exit(128 + sig);
  }
  g_signal.store(sig);
  const char msg[] = "\nsft: stop requested; finishing the current step and saving a checkpoint "
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
