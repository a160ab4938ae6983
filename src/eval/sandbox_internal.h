// Internal: what the sandbox's files (sandbox.h) share: the plan of one run, which the
// parent prepares before fork() and the child carries out with async-signal-safe calls only
// (sandbox_child.cpp); the settings a batch of programs runs with; running one program
// (sandbox_run.cpp); Landlock rules and the host's mounts (sandbox.cpp); per-sample cgroups
// (sandbox_cgroup.cpp).
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "sft/eval/sandbox.h"

namespace sft::eval::sandbox_internal {

constexpr int kSetupFailed = 121;  // exit status of a child whose sandbox setup failed

// ---- what the forked child needs, prepared before fork ------------------------------

struct MountPoint {
  std::string path;
  unsigned long flags;  // per-mount flags to keep when remounting read-only (locked ones in a user namespace)
};

// A Landlock rule: `access` (LANDLOCK_ACCESS_FS_*) beneath `path` (or on it, for a file).
struct LandlockRule {
  std::string path;
  std::uint64_t access;
};

struct Plan {
  bool sandbox = true;
  bool root = true;
  bool harness = false;  // run the program under kHarness (PassRule::harness), its text on fd 5
  uid_t uid = 0;         // root: the unprivileged uid to run as
  pid_t parent = 0;      // the evaluator: the helper exits when it is gone
  std::string work;      // unsafe mode: the host folder to run in (the sandbox runs in its own /tmp)
  std::string program;   // sandbox: written into the private /tmp by the child (the harness's comes on fd 5)
  std::string tmpfs_opts, empty_opts, uid_map, gid_map;
  std::vector<MountPoint> mounts;  // remounted one by one where mount_setattr(2) is missing (Linux < 5.12)
  std::vector<std::string> argv, envp;
  rlim_t cpu_s = 0, as_bytes = 0, fsize_bytes = 0, nproc = 0;  // nproc 0: left unchanged
  int in_fd = -1, out_fd = -1, err_fd = -1;
  int secret_fd = -1, report_fd = -1, program_fd = -1;  // harness: become fds 3, 4 and 5
  std::vector<std::string> cgroup_procs;  // cgroup.procs files the child moves itself into first
  std::uint64_t landlock_handled = 0;     // 0: no Landlock (root mode, or none in this kernel)
  std::vector<LandlockRule> landlock;     // what the program may do with the file system
};

// Writes all of `text` to `fd`, retrying after EINTR; false on any other failure.
// Async-signal-safe (the child writes prog.py with it).
bool write_all(int fd, const std::string& text);

// The forked child: resets its signals, takes its descriptors, enters the new namespaces and
// forks the program as PID 1 of the new PID namespace, then exits with its status (unsafe
// mode: becomes the program). Exits kSetupFailed when a step of the setup fails.
[[noreturn]] void child_main(const Plan& p, char* const* argv, char* const* envp);

// ---- per-sample cgroups (sandbox_cgroup.cpp) -------------------------------------------

// A cgroup per sample, made before it starts and removed once its processes are gone:
// memory (every process of the sample together, its tmpfs pages included, no swap) and a
// process count. The groups sit in one group of the evaluator's (sft-sandbox.<pid>), nested
// in the evaluator's own cgroup so the limits above it still hold: on cgroup v1 in each
// controller's hierarchy; on cgroup v2 beside a leaf the evaluator first moves itself into
// (its cgroup must hold no other process, and delegate memory and pids). For the CPU the
// evaluator's group weighs what the evaluator itself does (its session's autogroup where
// the kernel has one, else its nice level), and the samples share it equally, so a sample
// of 60 processes gets no more than a sample of one.
class SampleCgroups {
 public:
  // This identity's groups; nullptr, and `why`, where cgroups are not usable here.
  static SampleCgroups* get(std::string* why);

  struct Slot {
    std::vector<std::string> dirs;   // one per hierarchy (v1), or one (v2)
    std::vector<std::string> procs;  // their cgroup.procs, which the child joins
  };
  // A new group with these limits. Throws sft::Error when it cannot be made.
  std::shared_ptr<Slot> acquire(std::int64_t memory_mb, std::int64_t processes);
  // Whether the kernel killed a process of the sample for exceeding its memory.
  bool out_of_memory(const Slot& slot) const;
  // Waits (up to 2 s) for the sample's processes to leave, then removes the group.
  void release(std::shared_ptr<Slot> slot);

  ~SampleCgroups();  // removes the evaluator's group; v2: the evaluator back where it was

 private:
  SampleCgroups() = default;
  // get()'s steps: the groups of the hierarchies mounted here (nullptr and `reason` when
  // none is usable), in v1 or in v2, and v2's delegation of the controllers below its cgroup.
  static std::unique_ptr<SampleCgroups> make(std::string* reason);
  void use_v1(const std::string& memory, const std::string& pids, const std::string& cpu,
              std::string* reason);
  void use_v2(const std::string& home, std::string* reason);
  void delegate_v2(const std::vector<std::string>& offered, std::string* reason);
  bool v2_ = false;
  std::string kind_;                            // e.g. "cgroup v1: memory, pids, cpu"; "" until usable
  std::string memory_, pids_, cpu_;             // the evaluator's groups (cpu_ may be ""; v2: one)
  std::string v2_home_, v2_leaf_, v2_enabled_;  // v2: its cgroup, its leaf, what was enabled there
  std::mutex mutex_;
  int made_ = 0;
};

// ---- the parent -----------------------------------------------------------------------

struct Context {
  SandboxOptions o;
  std::string python;
  PassRule rule = PassRule::exit_status;
  bool root = true;
  std::uint64_t landlock_handled = 0;  // user-namespace mode: see landlock_rules()
  std::vector<LandlockRule> landlock;
  SampleCgroups* cgroups = nullptr;  // none: no bound across a sample's processes
};

// Runs one program as worker `slot` and judges it by ctx.rule.
ExecResult run_one(const std::string& program, const Context& ctx, int slot);

// Who is asking: the effective uid and its user namespace (the inode of /proc/self/ns/user).
// A forked child that became another user, or entered a user namespace, gets its own probe
// and its own cgroups.
std::pair<uid_t, ino_t> identity();

// Mount points from /proc/self/mountinfo (octal escapes decoded), /proc and below left out.
std::vector<MountPoint> mount_points();

// The Landlock ABI of this kernel (0: none) and the file-system accesses it can restrict.
int landlock_abi();
std::uint64_t landlock_handled(int abi);
// What a program may touch in user-namespace mode, where it keeps the caller's uid: read and
// execute /usr, /bin, /sbin, /lib*, the interpreter's installation and the world-readable
// files of /etc; read and write its /tmp and the few nodes of its /dev; read its /proc.
std::vector<LandlockRule> landlock_rules(const std::string& python, int abi);

// Removes the host folders of unsafe-mode evaluators that are gone (killed with SIGKILL).
void remove_stale_folders();

}  // namespace sft::eval::sandbox_internal
