// Graceful stop on SIGTERM / SIGINT (Slurm preemption, Ctrl-C): the first signal asks the
// trainer to finish its current step, save a checkpoint and exit; a second signal, a second
// or more later, exits at once (exit code 128 + signal number). Within a second it is taken
// for the same request delivered twice (a job scheduler and a parent sweep both signalling).
#pragma once

namespace sft::train {

class StopSignal {
 public:
  static void install();       // idempotent
  static bool requested();     // a first signal arrived
  static int signal_number();  // which one (0 if none)
  static void clear();         // forget a request (tests)
};

}  // namespace sft::train
