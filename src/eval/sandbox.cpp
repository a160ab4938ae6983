#include "sft/eval/sandbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"

namespace sft::eval {
namespace {

constexpr int kSetupFailed = 121;  // exit status of a child whose sandbox setup failed

// ---- what the forked child needs, prepared before fork ------------------------------

struct MountPoint {
  std::string path;
  unsigned long flags;  // per-mount flags to keep when remounting read-only (locked ones in a user namespace)
};

// Mount points from /proc/self/mountinfo (octal escapes decoded), /proc and below left
// out: the child mounts a fresh /proc over them.
std::vector<MountPoint> mount_points() {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) throw Error("sandbox: cannot read /proc/self/mountinfo");
  std::vector<MountPoint> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::string id, parent, devno, root, point, opts;
    ss >> id >> parent >> devno >> root >> point >> opts;
    std::string path;
    for (std::size_t i = 0; i < point.size(); ++i) {
      if (point[i] == '\\' && i + 3 < point.size()) {
        path += static_cast<char>(std::stoi(point.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        path += point[i];
      }
    }
    if (path == "/proc" || path.rfind("/proc/", 0) == 0) continue;
    unsigned long flags = 0;
    std::istringstream os(opts);
    std::string o;
    while (std::getline(os, o, ',')) {
      if (o == "nosuid") flags |= MS_NOSUID;
      else if (o == "nodev") flags |= MS_NODEV;
      else if (o == "noexec") flags |= MS_NOEXEC;
      else if (o == "noatime") flags |= MS_NOATIME;
      else if (o == "nodiratime") flags |= MS_NODIRATIME;
      else if (o == "relatime") flags |= MS_RELATIME;
      else if (o == "strictatime") flags |= MS_STRICTATIME;
    }
    out.push_back({path, flags});
  }
  return out;
}

struct Plan {
  bool sandbox = true;
  bool root = true;
  bool harness = false;  // run prog.py under kHarness (PassRule::harness)
  uid_t uid = 0;         // root: the unprivileged uid to run as
  pid_t parent = 0;      // the evaluator: the helper exits when it is gone
  std::string work;      // unsafe mode: the host folder to run in (the sandbox runs in its own /tmp)
  std::string program;   // sandbox: written into the private /tmp by the child
  std::string tmpfs_opts, empty_opts, uid_map, gid_map;
  std::vector<MountPoint> mounts;
  std::vector<std::string> argv, envp;
  rlim_t cpu_s = 0, as_bytes = 0, fsize_bytes = 0, nproc = 0;  // nproc 0: left unchanged
  int in_fd = -1, out_fd = -1, err_fd = -1;
  int secret_fd = -1, report_fd = -1;  // harness: become fds 3 and 4
};

// The harness (PassRule::harness). It reads the per-program secret from fd 3 and closes
// it before any of the program runs, runs prog.py, and only when that returns (check()
// passed, no exception, no SystemExit) writes the secret to fd 4 with the os.write it
// captured at start. The secret is in no file and no code object the program can read.
constexpr const char* kHarness =
    "import os\n"
    "def _sft_harness(read=os.read, write=os.write, close=os.close):\n"
    "    secret = read(3, 64)\n"
    "    close(3)\n"
    "    with open('prog.py', 'rb') as f:\n"
    "        code = compile(f.read(), 'prog.py', 'exec')\n"
    "    exec(code, {'__name__': '__main__', '__file__': 'prog.py', '__builtins__': __builtins__})\n"
    "    write(4, secret)\n"
    "_sft_harness()\n";

// The seccomp filter every sandboxed program runs under: no socket() of any family (the
// network namespace already has no network; this closes host Unix-domain sockets, which a
// read-only mount does not stop), socketpair() only as a connected stream pair (asyncio and
// multiprocessing need it; a datagram pair could sendto() a host socket), no io_uring
// (which opens sockets without socket()), and no other system-call ABI (x32, i386).
#if defined(__x86_64__)
constexpr std::uint32_t kAuditArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr std::uint32_t kAuditArch = AUDIT_ARCH_AARCH64;
#else
#error "the sandbox's seccomp filter knows x86-64 and aarch64 only"
#endif

#define SFT_DENY(err) BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (err))
const sock_filter kFilter[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kAuditArch, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
#if defined(__x86_64__)
    BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000U /* __X32_SYSCALL_BIT */, 0, 1),
    SFT_DENY(ENOSYS),
#endif
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 0, 1),
    SFT_DENY(EACCES),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
    SFT_DENY(ENOSYS),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socketpair, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[1])),  // type, low word
    BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0xf),                               // without SOCK_CLOEXEC etc.
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SOCK_STREAM, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    SFT_DENY(EACCES),
};
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

// PID 1 of the new PID namespace: finishes the isolation and becomes the program.
[[noreturn]] void exec_program(const Plan& p, char* const* argv, char* const* envp) {
  if (p.sandbox) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("prctl(PDEATHSIG)");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) die("making mounts private");
    for (const auto& m : p.mounts)
      if (::mount(nullptr, m.path.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | m.flags, nullptr) != 0 &&
          errno != ENOENT)
        die("remounting read-only");
    if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) die("mounting /proc");
    // The working directory is a private /tmp; /run, /var/run and /dev/shm, where the host
    // keeps its sockets and shared memory, are empty and read-only.
    if (::mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, p.tmpfs_opts.c_str()) != 0)
      die("mounting the private /tmp");
    for (const char* dir : {"/run", "/var/run", "/dev/shm"})
      if (::mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, p.empty_opts.c_str()) != 0 &&
          errno != ENOENT && errno != ENOTDIR)
        die("mounting an empty /run, /var/run or /dev/shm");
    int fd = ::open("/tmp/prog.py", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 || !write_all(fd, p.program)) die("writing /tmp/prog.py");
    if (p.root && ::fchown(fd, p.uid, p.uid) != 0) die("chown /tmp/prog.py");
    ::close(fd);
  }
  if (::chdir(p.work.c_str()) != 0) die("chdir to the working directory");
  set_limit(RLIMIT_CPU, p.cpu_s, "RLIMIT_CPU");
  set_limit(RLIMIT_AS, p.as_bytes, "RLIMIT_AS");
  set_limit(RLIMIT_FSIZE, p.fsize_bytes, "RLIMIT_FSIZE");
  set_limit(RLIMIT_NOFILE, 256, "RLIMIT_NOFILE");
  set_limit(RLIMIT_CORE, 0, "RLIMIT_CORE");
  if (p.nproc > 0) set_limit(RLIMIT_NPROC, p.nproc, "RLIMIT_NPROC");
  if (p.sandbox && p.root) {
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
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("prctl(NO_NEW_PRIVS)");
  // Cleared by setresuid; unsafe mode sets it too, so the program dies with the evaluator.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("prctl(PDEATHSIG)");
  if (p.sandbox) {
    sock_fprog prog{static_cast<unsigned short>(sizeof kFilter / sizeof kFilter[0]), const_cast<sock_filter*>(kFilter)};
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) die("installing the seccomp filter");
  }
  ::syscall(SYS_close_range, p.harness ? 5U : 3U, ~0U, 0U);
  ::execve(argv[0], argv, envp);
  die("exec python");
}

[[noreturn]] void child_main(const Plan& p, char* const* argv, char* const* envp) {
  // Dies with the evaluator (a SIGKILLed `sft eval` leaves no program running); the check
  // closes the race with a parent that died before the prctl.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != p.parent) ::_exit(kSetupFailed);
  ::setpgid(0, 0);
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
    // Through copies above 4, so that neither target clobbers the other's source.
    int secret = ::fcntl(p.secret_fd, F_DUPFD, 10), report = ::fcntl(p.report_fd, F_DUPFD, 10);
    if (secret < 0 || report < 0 || ::dup2(secret, 3) < 0 || ::dup2(report, 4) < 0) ::_exit(kSetupFailed);
  }
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

// ---- the parent -----------------------------------------------------------------------

std::string resolve_python(const std::string& python) {
  if (!python.empty() && python.find('/') != std::string::npos) {
    if (::access(python.c_str(), X_OK) != 0 || fs::is_dir(python))
      throw ConfigError("--python " + python + ": not an executable file; give a python3 interpreter");
    return python;
  }
  if (python.empty() && ::access("/usr/bin/python3", X_OK) == 0) return "/usr/bin/python3";
  const std::string name = python.empty() ? "python3" : python;
  const char* path = std::getenv("PATH");
  std::istringstream ss(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':'))
    if (!dir.empty() && ::access((dir + "/" + name).c_str(), X_OK) == 0) return dir + "/" + name;
  throw ConfigError("--python " + name + ": not found on PATH; install python3 or give its path");
}

std::string temp_root() {
  const char* t = std::getenv("TMPDIR");
  return t && *t && fs::is_dir(t) ? t : "/tmp";
}

std::string last_line(const std::string& s) {
  std::size_t end = s.find_last_not_of(" \t\r\n");
  if (end == std::string::npos) return "";
  std::size_t start = s.find_last_of('\n', end);
  return s.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1) + 1);
}

// Processes of `uid` still alive (after a timeout their namespace may take a moment to die).
std::int64_t processes_of(uid_t uid) {
  DIR* d = ::opendir("/proc");
  if (!d) return 0;
  std::int64_t n = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    struct stat st;
    if (::stat((std::string("/proc/") + e->d_name).c_str(), &st) == 0 && st.st_uid == uid) ++n;
  }
  ::closedir(d);
  return n;
}

struct Context {
  SandboxOptions o;
  std::string python;
  PassRule rule = PassRule::exit_status;
  std::vector<MountPoint> mounts;
  bool root = true;
};

// A file in memory (stderr, the harness's report): gone with the last descriptor, so a
// killed evaluator leaves nothing behind. RLIMIT_FSIZE bounds what the program writes.
int memory_file(const char* name) {
  int fd = ::memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) throw Error(std::string("sandbox: memfd_create failed: ") + std::strerror(errno));
  return fd;
}

// At most `max` bytes of a file: its start, or its end when `tail`.
std::string read_some(int fd, std::size_t max, bool tail) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return "";
  const auto size = static_cast<std::size_t>(st.st_size);
  std::string out(std::min(size, max), '\0');
  const off_t at = tail ? static_cast<off_t>(size - out.size()) : 0;
  const ssize_t n = ::pread(fd, out.data(), out.size(), at);
  out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return out;
}

std::string random_hex(std::size_t bytes) {
  std::string raw(bytes, '\0');
  std::size_t got = 0;
  while (got < bytes) {
    ssize_t n = ::getrandom(raw.data() + got, bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(std::string("sandbox: getrandom failed: ") + std::strerror(errno));
    got += static_cast<std::size_t>(n);
  }
  return hex(raw.data(), raw.size());
}

// Unsafe mode runs in a host folder named after the evaluator's pid, so that the folders
// of an evaluator killed with SIGKILL are recognised and removed by the next one.
constexpr const char* kUnsafePrefix = "sft_sandbox.";

void remove_stale_folders() {
  const std::string root = temp_root();
  DIR* d = ::opendir(root.c_str());
  if (!d) return;
  std::vector<std::string> stale;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.rfind(kUnsafePrefix, 0) != 0) continue;
    const std::string rest = name.substr(std::strlen(kUnsafePrefix));
    const auto dot = rest.find('.');
    if (dot == std::string::npos || dot == 0 || rest.find_first_not_of("0123456789") != dot) continue;
    const long pid = std::strtol(rest.substr(0, dot).c_str(), nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) stale.push_back(root + "/" + name);
  }
  ::closedir(d);
  for (const auto& dir : stale) {
    try {
      fs::remove_all(dir);
    } catch (...) {
    }
  }
}

ExecResult run_one(const std::string& program, const Context& ctx, int slot) {
  const SandboxOptions& o = ctx.o;
  Plan p;
  p.sandbox = !o.unsafe_no_sandbox;
  p.root = ctx.root;
  p.harness = ctx.rule == PassRule::harness;
  p.parent = ::getpid();
  p.uid = ctx.root ? static_cast<uid_t>(kSandboxUidBase + static_cast<std::uint32_t>(slot)) : ::getuid();

  // Every descriptor the child gets, closed on any way out of here.
  struct Fds {
    std::vector<int> fds;
    int keep(int fd) {
      if (fd >= 0) fds.push_back(fd);
      return fd;
    }
    ~Fds() {
      for (int fd : fds) ::close(fd);
    }
  } fds;
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      try {
        if (!dir.empty()) fs::remove_all(dir);
      } catch (...) {
      }
    }
  } cleanup;

  if (p.sandbox) {
    p.work = "/tmp";
    p.program = program;
  } else {
    std::string tmpl = temp_root() + "/" + kUnsafePrefix + std::to_string(::getpid()) + ".XXXXXX";
    if (!::mkdtemp(tmpl.data()))
      throw Error("sandbox: cannot create a temporary directory in " + temp_root() + ": " + std::strerror(errno));
    cleanup.dir = p.work = tmpl;
    std::ofstream f(p.work + "/prog.py", std::ios::binary);
    f << program;
    if (!f) throw Error("sandbox: cannot write " + p.work + "/prog.py");
  }
  const std::string owner = std::to_string(ctx.root ? p.uid : 0);
  p.tmpfs_opts = "size=" + std::to_string(o.tmpfs_mb) + "m,mode=0700,uid=" + owner + ",gid=" + owner;
  p.empty_opts = "size=4k,mode=0755";
  p.uid_map = "0 " + std::to_string(::getuid()) + " 1\n";
  p.gid_map = "0 " + std::to_string(::getgid()) + " 1\n";
  p.mounts = ctx.mounts;
  if (p.harness)
    p.argv = {ctx.python, "-I", "-c", kHarness};
  else
    p.argv = {ctx.python, "-I", "prog.py"};
  p.envp = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + p.work, "TMPDIR=" + p.work, "LANG=C.UTF-8",
            "PYTHONDONTWRITEBYTECODE=1"};
  p.cpu_s = static_cast<rlim_t>(o.cpu_s > 0 ? o.cpu_s : static_cast<std::int64_t>(std::ceil(o.timeout_s)) + 1);
  p.as_bytes = static_cast<rlim_t>(o.memory_mb) << 20;
  p.fsize_bytes = static_cast<rlim_t>(o.file_size_mb) << 20;
  p.nproc = static_cast<rlim_t>(o.processes);
  if (!p.sandbox) {
    if (ctx.root) p.nproc = 0;  // left as it is: counted per uid, and root is exempt anyway
  } else if (!ctx.root) {
    // Without root the count includes the caller's own processes (and the other workers').
    struct rlimit rl;
    ::getrlimit(RLIMIT_NPROC, &rl);
    p.nproc = std::min<rlim_t>(rl.rlim_max, static_cast<rlim_t>(processes_of(::getuid()) + o.processes));
  }
  p.in_fd = fds.keep(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  p.out_fd = fds.keep(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  if (p.in_fd < 0 || p.out_fd < 0) throw Error(std::string("sandbox: cannot open /dev/null: ") + std::strerror(errno));
  p.err_fd = fds.keep(memory_file("sft_sandbox_stderr"));
  std::string secret;
  if (p.harness) {
    // The secret waits in a pipe the harness empties before the program starts.
    secret = random_hex(16);
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw Error(std::string("sandbox: pipe failed: ") + std::strerror(errno));
    p.secret_fd = fds.keep(pipe_fds[0]);
    const bool written = write_all(pipe_fds[1], secret);
    ::close(pipe_fds[1]);
    if (!written) throw Error("sandbox: cannot write the harness's secret");
    p.report_fd = fds.keep(memory_file("sft_sandbox_report"));
  }
  std::vector<char*> argv, envp;
  for (auto& a : p.argv) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : p.envp) envp.push_back(e.data());
  envp.push_back(nullptr);

  const auto start = std::chrono::steady_clock::now();
  pid_t pid = ::fork();
  if (pid < 0) throw Error(std::string("sandbox: fork failed: ") + std::strerror(errno));
  if (pid == 0) child_main(p, argv.data(), envp.data());

  int status = 0;
  bool timed_out = false;
  auto sleep = std::chrono::microseconds(500);
  for (;;) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid || (w < 0 && errno != EINTR)) break;
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > o.timeout_s) {
      // The child's death kills the namespace's init (PDEATHSIG), and with it the namespace.
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      timed_out = true;
      break;
    }
    std::this_thread::sleep_for(sleep);
    sleep = std::min(sleep * 2, std::chrono::microseconds(10000));
  }
  ::kill(-pid, SIGKILL);  // stragglers of the process group (unsafe mode has no namespace)
  if (p.sandbox && ctx.root && timed_out) {
    // Wait until the namespace is gone, so that the next program of this worker's uid
    // starts with a process count of zero.
    for (int i = 0; i < 400 && processes_of(p.uid) > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }

  ExecResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string err = read_some(p.err_fd, 2000, true);
  r.stderr_tail = err;
  const bool exited_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  const std::string report = p.harness ? read_some(p.report_fd, 256, false) : "";
  const bool reached_end = !p.harness || report == secret;
  if (timed_out) {
    r.result = "timed out";
  } else if (exited_ok && reached_end) {
    r.passed = true;
    r.result = "passed";
  } else {
    std::string why = last_line(err);
    if (why.empty() && exited_ok)
      why = report.empty() ? "the program exited before the tests finished"
                           : "the completion report does not carry the harness's secret (forged)";
    if (why.empty() && WIFEXITED(status)) why = "exit status " + std::to_string(WEXITSTATUS(status));
    if (why.empty() && WIFSIGNALED(status)) why = "killed by signal " + std::to_string(WTERMSIG(status));
    if (WIFEXITED(status) && WEXITSTATUS(status) == kSetupFailed && why.rfind("sandbox:", 0) == 0)
      why = "sandbox setup: " + why;
    r.result = "failed: " + why;
  }
  return r;
}

Context make_context(const SandboxOptions& o, PassRule rule, bool root) {
  Context c;
  c.o = o;
  c.python = resolve_python(o.python);
  c.rule = rule;
  c.root = root;
  if (!o.unsafe_no_sandbox) c.mounts = mount_points();
  return c;
}

// How the sandbox works here, probed once by running a trivial program: as root (real root:
// privilege drop to a per-worker uid), else in a user namespace (also the fallback for a
// root that is itself inside a user namespace, where other uids are not mapped).
struct Probe {
  bool ok = false, root = false;
  std::string reason;
};

const Probe& probe() {
  static const Probe p = [] {
    Probe r;
    SandboxOptions o;
    o.timeout_s = 30;
    std::vector<bool> modes;
    if (::geteuid() == 0) modes.push_back(true);
    modes.push_back(false);
    for (bool root : modes) {
      try {
        ExecResult e = run_one("print('ok')\n", make_context(o, PassRule::harness, root), 0);
        if (e.passed) {
          r.ok = true;
          r.root = root;
          return r;
        }
        r.reason += (r.reason.empty() ? "" : "; ") + std::string(root ? "as root: " : "in a user namespace: ") + e.result;
      } catch (const std::exception& ex) {
        r.reason += (r.reason.empty() ? "" : "; ") + std::string(root ? "as root: " : "in a user namespace: ") + ex.what();
      }
    }
    r.reason += " (the sandbox needs root, or unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1 "
                "and user.max_user_namespaces > 0)";
    return r;
  }();
  return p;
}

}  // namespace

bool sandbox_available(std::string* why) {
  if (why) *why = probe().reason;
  return probe().ok;
}

std::vector<ExecResult> run_programs(const std::vector<std::string>& programs, const SandboxOptions& o,
                                     PassRule rule) {
  std::string why;
  if (!o.unsafe_no_sandbox && !sandbox_available(&why))
    throw Error("HumanEval sandbox unavailable: " + why +
                "; refusing to run untrusted code (--unsafe-no-sandbox runs it without isolation, at your own risk)");
  if (o.unsafe_no_sandbox) remove_stale_folders();
  const Context ctx = make_context(o, rule, o.unsafe_no_sandbox ? ::geteuid() == 0 : probe().root);
  {
    // An interpreter that cannot run a trivial program would fail every sample: a 0 % score
    // that says nothing about the model. Stop instead.
    static std::mutex checked_mutex;
    static std::set<std::string> checked;
    std::lock_guard<std::mutex> lock(checked_mutex);
    if (!checked.count(ctx.python)) {
      Context trial = ctx;
      trial.rule = PassRule::harness;
      const ExecResult e = run_one("print('ok')\n", trial, 0);
      if (!e.passed)
        throw ConfigError("--python " + ctx.python + ": cannot run a one-line program in the sandbox (" + e.result +
                          "); give a working python3 interpreter");
      checked.insert(ctx.python);
    }
  }
  std::vector<ExecResult> results(programs.size());
  std::atomic<std::size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  const int workers = static_cast<int>(std::clamp<std::size_t>(static_cast<std::size_t>(std::max(1, o.workers)), 1,
                                                               std::max<std::size_t>(1, programs.size())));
  std::vector<std::thread> pool;
  for (int w = 0; w < workers; ++w)
    pool.emplace_back([&, w] {
      for (std::size_t i = next++; i < programs.size(); i = next++) {
        try {
          results[i] = run_one(programs[i], ctx, w);
        } catch (...) {
          std::lock_guard<std::mutex> lock(failure_mutex);
          if (!failure) failure = std::current_exception();
          next = programs.size();  // stop handing out work
        }
      }
    });
  for (auto& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
  return results;
}

}  // namespace sft::eval
