// Graceful stop on SIGTERM / SIGINT (Slurm preemption, Ctrl-C): the first signal asks the
// trainer to finish its current step, save a checkpoint and exit; a second signal exits at
// once (exit code 128 + signal number).
#pragma once

namespace sft::train {

class StopSignal {
 public:
  static void install();      // idempotent
  static bool requested();    // a first signal arrived
  static int signal_number();  // which one (0 if none)
  static void clear();        // forget a request (tests)
};

}  // namespace sft::train
