// The sandbox's forked child (sandbox.h): from fork() to exec, with async-signal-safe calls
// only. It joins its cgroup, leaves the evaluator's session, enters new namespaces, makes
// the host read-only with a private /tmp and a minimal /dev, sets the limits, drops
// privileges, applies Landlock (user-namespace mode), installs the seccomp filter and
// becomes the program.
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "sandbox_internal.h"

namespace sft::eval::sandbox_internal {
namespace {

// The seccomp filter every sandboxed program runs under:
//   - no socket() of any family (the network namespace already has no network; this closes
//     host Unix-domain sockets, which a read-only mount does not stop), socketpair() only
//     as a connected stream pair (asyncio and multiprocessing need it; a datagram pair
//     could sendto() a host socket), no io_uring (which opens sockets without socket());
//   - no TIOCSTI or TIOCLINUX ioctl, which push keystrokes into a terminal (the program has
//     none: this is the second wall);
//   - no kernel keyring (add_key, request_key, keyctl): a uid's keyring outlives its
//     processes, so one sample could leave state for the next;
//   - no memfd_create or SysV shmget: memory there escapes RLIMIT_AS and the tmpfs size;
//   - no ptrace, process_vm_readv or process_vm_writev: no process reads another's memory
//     (the harness keeps its secret in memory);
//   - no other system-call ABI (x32, i386).
#if defined(__x86_64__)
constexpr std::uint32_t kAuditArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr std::uint32_t kAuditArch = AUDIT_ARCH_AARCH64;
#else
#error "the sandbox's seccomp filter knows x86-64 and aarch64 only"
#endif

#define SFT_DENY(err) BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (err))
#define SFT_DENY_NR(nr, err) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), SFT_DENY(err)
const sock_filter kFilter[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kAuditArch, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
#if defined(__x86_64__)
    BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000U /* __X32_SYSCALL_BIT */, 0, 1),
    SFT_DENY(ENOSYS),
#endif
    SFT_DENY_NR(__NR_socket, EACCES),
    SFT_DENY_NR(__NR_io_uring_setup, ENOSYS),
    SFT_DENY_NR(__NR_add_key, EPERM),
    SFT_DENY_NR(__NR_request_key, EPERM),
    SFT_DENY_NR(__NR_keyctl, EPERM),
    SFT_DENY_NR(__NR_memfd_create, EPERM),
    SFT_DENY_NR(__NR_shmget, EPERM),
    SFT_DENY_NR(__NR_ptrace, EPERM),
    SFT_DENY_NR(__NR_process_vm_readv, EPERM),
    SFT_DENY_NR(__NR_process_vm_writev, EPERM),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 5),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[1])),  // the request (an unsigned int)
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCSTI, 2, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCLINUX, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    SFT_DENY(EPERM),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socketpair, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[1])),  // type, low word
    BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0xf),                             // without SOCK_CLOEXEC etc.
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SOCK_STREAM, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    SFT_DENY(EACCES),
};
#undef SFT_DENY_NR
#undef SFT_DENY

// ---- the child: async-signal-safe calls only ------------------------------------------

void put(const char* s) {
  ssize_t r = ::write(2, s, std::strlen(s));
  (void)r;
}

[[noreturn]] void die(const char* what) {
  int e = errno;
  char num[16];
  int n = 0;
  char rev[16];
  do {
    rev[n++] = static_cast<char>('0' + e % 10);
    e /= 10;
  } while (e > 0 && n < 15);
  for (int i = 0; i < n; ++i) num[i] = rev[n - 1 - i];
  num[n] = '\0';
  put("sandbox: ");
  put(what);
  put(" failed (errno ");
  put(num);
  put(")\n");
  ::_exit(kSetupFailed);
}

bool write_proc(const char* path, const std::string& text) {
  int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

void set_limit(int resource, rlim_t v, const char* what) {
  struct rlimit rl;
  if (::getrlimit(resource, &rl) == 0 && rl.rlim_max != RLIM_INFINITY && v > rl.rlim_max) v = rl.rlim_max;
  rl = {v, v};
  if (::setrlimit(resource, &rl) != 0) die(what);
}

// The host read-only in this mount namespace: every mount at once where the kernel has
// mount_setattr(2) (so a mount the host made a moment ago is covered too), else the list
// the parent read just before the fork.
void make_host_read_only(const Plan& p) {
  struct mount_attr ro {};
  ro.attr_set = MOUNT_ATTR_RDONLY;
  if (::mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, &ro, sizeof ro) == 0) return;
  for (const auto& m : p.mounts)
    if (::mount(nullptr, m.path.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | m.flags, nullptr) != 0 &&
        errno != ENOENT)
      die("remounting read-only");
}

// A /dev with only null, zero, full, random, urandom (bound from the host's), an empty
// read-only shm and the fd links: no terminal, no pty, nothing else. Built in the private
// /tmp, then moved over /dev.
void make_minimal_dev(const Plan& p) {
  const char* stage = "/tmp/.dev";
  if (::mkdir(stage, 0755) != 0 ||
      ::mount("tmpfs", stage, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755") != 0)
    die("mounting the sandbox's /dev");
  char path[64];
  for (const char* node : {"null", "zero", "full", "random", "urandom"}) {
    std::strcpy(path, "/tmp/.dev/");
    std::strcat(path, node);
    char host[32] = "/dev/";
    std::strcat(host, node);
    int fd = ::open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) die("creating a /dev node");
    ::close(fd);
    if (::mount(host, path, nullptr, MS_BIND, nullptr) != 0) die("binding a /dev node");
  }
  if (::mkdir("/tmp/.dev/shm", 0755) != 0 ||
      ::mount("tmpfs", "/tmp/.dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
              p.empty_opts.c_str()) != 0)
    die("mounting an empty /dev/shm");
  if (::symlink("/proc/self/fd", "/tmp/.dev/fd") != 0 ||
      ::symlink("/proc/self/fd/0", "/tmp/.dev/stdin") != 0 ||
      ::symlink("/proc/self/fd/1", "/tmp/.dev/stdout") != 0 ||
      ::symlink("/proc/self/fd/2", "/tmp/.dev/stderr") != 0)
    die("linking /dev/fd");
  if (::mount(nullptr, stage, nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, nullptr) !=
      0)
    die("making /dev read-only");
  if (::mount(stage, "/dev", nullptr, MS_MOVE, nullptr) != 0) die("moving the sandbox's /dev into place");
  if (::rmdir(stage) != 0) die("removing the /dev stage");
}

// Landlock (user-namespace mode, where the program keeps the caller's uid): only what the
// rules allow. Rules on a file get only the rights a file can have.
void restrict_with_landlock(const Plan& p) {
  constexpr std::uint64_t kFileRights = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |
                                        LANDLOCK_ACCESS_FS_READ_FILE | (1ULL << 14) /* TRUNCATE */;
  struct landlock_ruleset_attr attr {};
  attr.handled_access_fs = p.landlock_handled;
  const int ruleset = static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0U));
  if (ruleset < 0) die("landlock_create_ruleset");
  for (const auto& rule : p.landlock) {
    const int fd = ::open(rule.path.c_str(), O_PATH | O_CLOEXEC);
    if (fd < 0) continue;  // absent here
    struct stat st;
    struct landlock_path_beneath_attr beneath {};
    beneath.allowed_access = rule.access & p.landlock_handled;
    if (::fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode)) beneath.allowed_access &= kFileRights;
    beneath.parent_fd = fd;
    if (::syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &beneath, 0U) != 0)
      die("landlock_add_rule");
    ::close(fd);
  }
  if (::syscall(SYS_landlock_restrict_self, ruleset, 0U) != 0) die("landlock_restrict_self");
  ::close(ruleset);
}

// Under the harness /proc is an empty tmpfs: no /proc/self/mem, where the harness keeps its
// secret. (Mounted after the last write to /proc/self, while the process may still mount.)
void hide_proc(const Plan& p) {
  if (::mount("tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
              p.empty_opts.c_str()) != 0)
    die("hiding /proc");
}

// PID 1 of the new PID namespace: finishes the isolation and becomes the program.
[[noreturn]] void exec_program(const Plan& p, char* const* argv, char* const* envp) {
  if (p.sandbox) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("prctl(PDEATHSIG)");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) die("making mounts private");
    make_host_read_only(p);
    if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
      die("mounting /proc");
    // A worker uid's keyring outlives its processes (keys an older sft let a sample add):
    // their descriptions in /proc stay hidden as well.
    for (const char* keys : {"/proc/keys", "/proc/key-users"})
      if (::mount("/dev/null", keys, nullptr, MS_BIND, nullptr) != 0 && errno != ENOENT)
        die("hiding /proc/keys");
    // The working directory is a private /tmp; /run and /var/run, where the host keeps its
    // sockets, are empty and read-only.
    if (::mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, p.tmpfs_opts.c_str()) != 0)
      die("mounting the private /tmp");
    for (const char* dir : {"/run", "/var/run"})
      if (::mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
                  p.empty_opts.c_str()) != 0 &&
          errno != ENOENT && errno != ENOTDIR)
        die("mounting an empty /run or /var/run");
    make_minimal_dev(p);
    if (!p.harness) {  // the harness reads the program from fd 5: no file the program could read back
      int fd = ::open("/tmp/prog.py", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0 || !write_all(fd, p.program)) die("writing /tmp/prog.py");
      if (p.root && ::fchown(fd, p.uid, p.uid) != 0) die("chown /tmp/prog.py");
      ::close(fd);
    }
  }
  if (::chdir(p.work.c_str()) != 0) die("chdir to the working directory");
  set_limit(RLIMIT_CPU, p.cpu_s, "RLIMIT_CPU");
  set_limit(RLIMIT_AS, p.as_bytes, "RLIMIT_AS");
  set_limit(RLIMIT_FSIZE, p.fsize_bytes, "RLIMIT_FSIZE");
  set_limit(RLIMIT_NOFILE, 256, "RLIMIT_NOFILE");
  set_limit(RLIMIT_CORE, 0, "RLIMIT_CORE");
  if (p.nproc > 0) set_limit(RLIMIT_NPROC, p.nproc, "RLIMIT_NPROC");
  if (p.sandbox && p.root) {
    if (p.harness) hide_proc(p);
    // Raw system calls: this child is single-threaded, so per-thread credentials are the
    // process's. Changing uid from 0 clears every capability.
    if (::syscall(SYS_setgroups, 0, nullptr) != 0) die("setgroups");
    if (::syscall(SYS_setresgid, p.uid, p.uid, p.uid) != 0) die("setresgid");
    if (::syscall(SYS_setresuid, p.uid, p.uid, p.uid) != 0) die("setresuid");
    if (::getuid() != p.uid || ::geteuid() != p.uid) die("dropping privileges");
  } else if (p.sandbox) {
    // A nested user namespace: the read-only mounts of the outer one become locked.
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) die("unshare(nested user namespace)");
    write_proc("/proc/self/setgroups", "deny");
    if (!write_proc("/proc/self/uid_map", "0 0 1\n") || !write_proc("/proc/self/gid_map", "0 0 1\n"))
      die("writing the nested uid/gid map");
    if (p.harness) hide_proc(p);
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("prctl(NO_NEW_PRIVS)");
  if (p.sandbox && p.landlock_handled != 0) restrict_with_landlock(p);
  // Cleared by setresuid; unsafe mode sets it too, so the program dies with the evaluator.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("prctl(PDEATHSIG)");
  if (p.sandbox) {
    sock_fprog prog{static_cast<unsigned short>(sizeof kFilter / sizeof kFilter[0]),
                    const_cast<sock_filter*>(kFilter)};
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) die("installing the seccomp filter");
  }
  ::syscall(SYS_close_range, p.harness ? 6U : 3U, ~0U, 0U);
  ::execve(argv[0], argv, envp);
  die("exec python");
}

}  // namespace

bool write_all(int fd, const std::string& text) {
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

[[noreturn]] void child_main(const Plan& p, char* const* argv, char* const* envp) {
  // Dies with the evaluator (a SIGKILLed `sft eval` leaves no program running); the check
  // closes the race with a parent that died before the prctl.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != p.parent) ::_exit(kSetupFailed);
  // A session of its own: no controlling terminal, so /dev/tty opens nothing and no signal
  // of the user's terminal reaches it (the process group id stays its pid for kill(-pid)).
  if (::setsid() < 0) ::_exit(kSetupFailed);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < 32; ++s)
    if (s != SIGKILL && s != SIGSTOP) ::sigaction(s, &dfl, nullptr);
  if (::dup2(p.in_fd, 0) < 0 || ::dup2(p.out_fd, 1) < 0 || ::dup2(p.err_fd, 2) < 0) ::_exit(kSetupFailed);
  if (p.harness) {
    // Through copies above 5, so that no target clobbers another's source.
    int secret = ::fcntl(p.secret_fd, F_DUPFD, 10), report = ::fcntl(p.report_fd, F_DUPFD, 10),
        program = ::fcntl(p.program_fd, F_DUPFD, 10);
    if (secret < 0 || report < 0 || program < 0 || ::dup2(secret, 3) < 0 || ::dup2(report, 4) < 0 ||
        ::dup2(program, 5) < 0)
      ::_exit(kSetupFailed);
  }
  // Into the sample's cgroup before anything else: every process it starts is counted.
  for (const auto& procs : p.cgroup_procs)
    if (!write_proc(procs.c_str(), "0")) die("joining the sample's cgroup");
  if (!p.sandbox) exec_program(p, argv, envp);

  int flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;
  if (!p.root) flags |= CLONE_NEWUSER;
  if (::unshare(flags) != 0) die("unshare(mount, network, PID namespaces)");
  if (!p.root) {
    write_proc("/proc/self/setgroups", "deny");
    if (!write_proc("/proc/self/uid_map", p.uid_map) || !write_proc("/proc/self/gid_map", p.gid_map))
      die("writing the uid/gid map");
  }
  pid_t init = ::fork();  // PID 1 of the new namespace: all its processes die with it
  if (init < 0) die("fork");
  if (init == 0) exec_program(p, argv, envp);
  int status = 0;
  while (::waitpid(init, &status, 0) < 0)
    if (errno != EINTR) die("waitpid");
  ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

}  // namespace sft::eval::sandbox_internal
