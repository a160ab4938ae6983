// Running one program in the sandbox (sandbox.h), the parent's side: the plan for the
// child (limits, mounts, the harness and its secret), fork, the wall-clock timeout, and the
// verdict; and the host folders of unsafe mode.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include "sandbox_internal.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"

namespace sft::eval::sandbox_internal {
namespace {

// The harness (PassRule::harness). Before any of the program runs it reads the per-program
// secret from fd 3 into a buffer (zeroed if the program fails) and the program's text from
// fd 5 (so no file holds the tests), closes both, and installs an audit hook, which no code
// can remove, that refuses what could reach the harness's frame or skip a check: tracing
// and profiling, sys._getframe and the frames of tracebacks, generators and coroutines, the
// garbage collector's object lists, the code objects of the program's own functions
// (check()'s constants are its expected answers) and ctypes. It raises an exception that
// is both an AttributeError and a ValueError, which the standard library's own probes of
// frames (namedtuple, enum, typing, logging) catch. Only when the program returns (every
// check() passed, no exception, no SystemExit) does it write the secret to fd 4 with the
// os.write it captured at start. `types` is imported first: its import reads a traceback's
// frame.
constexpr const char* kHarness =
    "import os, sys, types\n"
    "def _sft_harness(readv=os.readv, read=os.read, write=os.write, close=os.close, "
    "addaudithook=sys.addaudithook):\n"
    "    secret = bytearray(64)\n"
    "    del secret[readv(3, [secret]):]\n"
    "    close(3)\n"
    "    parts = []\n"
    "    while True:\n"
    "        part = read(5, 1 << 20)\n"
    "        if not part:\n"
    "            break\n"
    "        parts.append(part)\n"
    "    close(5)\n"
    "    code = compile(b''.join(parts), 'prog.py', 'exec')\n"
    "    del parts, part\n"
    "    program = {'__name__': '__main__', '__file__': 'prog.py', '__builtins__': __builtins__}\n"
    "    class HarnessRefused(AttributeError, ValueError):\n"
    "        pass\n"
    "    events = frozenset(('sys.settrace', 'sys.setprofile', 'sys._getframe', 'sys._current_frames',\n"
    "                        'sys._current_exceptions', 'sys.monitoring.register_callback',\n"
    "                        'gc.get_objects', 'gc.get_referrers', 'gc.get_referents'))\n"
    "    frames = frozenset(('f_code', 'tb_frame', 'gi_frame', 'gi_code', 'cr_frame', 'cr_code',\n"
    "                        'ag_frame', 'ag_code'))\n"
    "    def audit(event, args):\n"
    "        if event in events or event[:7] == 'ctypes.':\n"
    "            raise HarnessRefused('the HumanEval harness refuses ' + event)\n"
    "        if event == 'object.__getattr__' or event == 'object.__setattr__':\n"
    "            name = args[1]\n"
    "            if type(name) is str and (name in frames or name == '__code__' and args[0].__globals__ is "
    "program):\n"
    "                raise HarnessRefused('the HumanEval harness refuses ' + event + ' ' + name)\n"
    "        elif event == 'import' and type(args[0]) is str and args[0] in ('ctypes', '_ctypes'):\n"
    "            raise HarnessRefused('the HumanEval harness refuses importing ' + args[0])\n"
    "    addaudithook(audit)\n"
    "    del audit\n"
    "    try:\n"
    "        exec(code, program)\n"
    "    except BaseException:\n"
    "        secret[:] = bytes(len(secret))\n"
    "        raise\n"
    "    write(4, secret)\n"
    "_sft_harness()\n";

std::string temp_root() {
  const char* t = std::getenv("TMPDIR");
  return t && *t && fs::is_dir(t) ? t : "/tmp";
}

std::string last_line(const std::string& s) {
  std::size_t end = s.find_last_not_of(" \t\r\n");
  if (end == std::string::npos) return "";
  std::size_t start = s.find_last_of('\n', end);
  return s.substr(start == std::string::npos ? 0 : start + 1,
                  end - (start == std::string::npos ? 0 : start + 1) + 1);
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

}  // namespace

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
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)
      stale.push_back(root + "/" + name);
  }
  ::closedir(d);
  for (const auto& dir : stale) {
    try {
      fs::remove_all(dir);
    } catch (...) {
    }
  }
}

namespace {

// Every descriptor the child gets, closed on any way out of run_one.
struct Descriptors {
  std::vector<int> fds;
  int keep(int fd) {
    if (fd >= 0) fds.push_back(fd);
    return fd;
  }
  ~Descriptors() {
    for (int fd : fds) ::close(fd);
  }
};

// Unsafe mode's host folder, removed on any way out of run_one.
struct FolderCleanup {
  std::string dir;
  ~FolderCleanup() {
    try {
      if (!dir.empty()) fs::remove_all(dir);
    } catch (...) {
    }
  }
};

// The sample's own cgroup, handed back (once its processes are gone) on any way out.
struct CgroupLease {
  SampleCgroups* cgroups = nullptr;
  std::shared_ptr<SampleCgroups::Slot> slot;
  ~CgroupLease() {
    if (slot) cgroups->release(std::move(slot));
  }
};

// Who runs the program, and under which rule.
Plan base_plan(const Context& ctx, int slot) {
  Plan p;
  p.sandbox = !ctx.o.unsafe_no_sandbox;
  p.root = ctx.root;
  p.harness = ctx.rule == PassRule::harness;
  p.parent = ::getpid();
  p.uid = ctx.root ? static_cast<uid_t>(kSandboxUidBase + static_cast<std::uint32_t>(slot)) : ::getuid();
  return p;
}

// Where the program runs: the sandbox's private /tmp (the child writes prog.py there), or
// unsafe mode's host folder with prog.py written now. The harness's program comes on fd 5.
void prepare_work_folder(Plan& p, const std::string& program, FolderCleanup& cleanup) {
  if (p.sandbox) {
    p.work = "/tmp";
    if (!p.harness) p.program = program;
  } else {
    std::string tmpl = temp_root() + "/" + kUnsafePrefix + std::to_string(::getpid()) + ".XXXXXX";
    if (!::mkdtemp(tmpl.data()))
      throw Error("sandbox: cannot create a temporary directory in " + temp_root() + ": " +
                  std::strerror(errno));
    cleanup.dir = p.work = tmpl;
    if (!p.harness) {
      std::ofstream f(p.work + "/prog.py", std::ios::binary);
      f << program;
      if (!f) throw Error("sandbox: cannot write " + p.work + "/prog.py");
    }
  }
}

// The child's mounts, id maps, Landlock rules, command line and environment.
void plan_namespace(Plan& p, const Context& ctx) {
  const std::string owner = std::to_string(ctx.root ? p.uid : 0);
  p.tmpfs_opts = "size=" + std::to_string(ctx.o.tmpfs_mb) + "m,mode=0700,uid=" + owner + ",gid=" + owner;
  p.empty_opts = "size=4k,mode=0755";
  p.uid_map = "0 " + std::to_string(::getuid()) + " 1\n";
  p.gid_map = "0 " + std::to_string(::getgid()) + " 1\n";
  if (p.sandbox) p.mounts = mount_points();  // read now: a mount made since the last sample is in it
  if (p.sandbox && !ctx.root) {
    p.landlock_handled = ctx.landlock_handled;
    p.landlock = ctx.landlock;
  }
  if (p.harness)
    p.argv = {ctx.python, "-I", "-c", kHarness};
  else
    p.argv = {ctx.python, "-I", "prog.py"};
  p.envp = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + p.work, "TMPDIR=" + p.work, "LANG=C.UTF-8",
            "PYTHONDONTWRITEBYTECODE=1"};
}

// The resource limits the child sets on itself.
void plan_limits(Plan& p, const SandboxOptions& o, bool root) {
  p.cpu_s =
      static_cast<rlim_t>(o.cpu_s > 0 ? o.cpu_s : static_cast<std::int64_t>(std::ceil(o.timeout_s)) + 1);
  p.as_bytes = static_cast<rlim_t>(o.memory_mb) << 20;
  p.fsize_bytes = static_cast<rlim_t>(o.file_size_mb) << 20;
  p.nproc = static_cast<rlim_t>(o.processes);
  if (!p.sandbox) {
    if (root) p.nproc = 0;  // left as it is: counted per uid, and root is exempt anyway
  } else if (!root) {
    // Without root the count includes the caller's own processes (and the other workers').
    struct rlimit rl;
    ::getrlimit(RLIMIT_NPROC, &rl);
    p.nproc = std::min<rlim_t>(rl.rlim_max, static_cast<rlim_t>(processes_of(::getuid()) + o.processes));
  }
}

// The child's descriptors: stdin and stdout on /dev/null, stderr in memory; for the harness
// also its secret, its report and the program's text. Returns the secret ("" without the harness).
std::string open_descriptors(Plan& p, const std::string& program, Descriptors& fds) {
  p.in_fd = fds.keep(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  p.out_fd = fds.keep(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  if (p.in_fd < 0 || p.out_fd < 0)
    throw Error(std::string("sandbox: cannot open /dev/null: ") + std::strerror(errno));
  p.err_fd = fds.keep(memory_file("sft_sandbox_stderr"));
  std::string secret;
  if (p.harness) {
    // The secret waits in a pipe the harness empties before the program starts.
    secret = random_hex(16);
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0)
      throw Error(std::string("sandbox: pipe failed: ") + std::strerror(errno));
    p.secret_fd = fds.keep(pipe_fds[0]);
    const bool written = write_all(pipe_fds[1], secret);
    ::close(pipe_fds[1]);
    if (!written) throw Error("sandbox: cannot write the harness's secret");
    p.report_fd = fds.keep(memory_file("sft_sandbox_report"));
    // The program's text, which the harness reads and closes before the program runs.
    p.program_fd = fds.keep(memory_file("sft_sandbox_program"));
    if (!write_all(p.program_fd, program) || ::lseek(p.program_fd, 0, SEEK_SET) != 0)
      throw Error(std::string("sandbox: cannot write the program: ") + std::strerror(errno));
  }
  return secret;
}

// execve's null-terminated array over `strings` (which must outlive it).
std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& a : strings) out.push_back(a.data());
  out.push_back(nullptr);
  return out;
}

// Waits for the child, killing it after `timeout_s`; true when it timed out.
bool wait_or_kill(pid_t pid, double timeout_s, std::chrono::steady_clock::time_point start, int& status) {
  auto sleep = std::chrono::microseconds(500);
  for (;;) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid || (w < 0 && errno != EINTR)) return false;
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeout_s) {
      // The child's death kills the namespace's init (PDEATHSIG), and with it the namespace.
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      return true;
    }
    std::this_thread::sleep_for(sleep);
    sleep = std::min(sleep * 2, std::chrono::microseconds(10000));
  }
}

// The verdict from the exit status, stderr's last line and (harness) the report.
void judge(ExecResult& r, const Plan& p, const Context& ctx, const CgroupLease& group, int status,
           bool timed_out, const std::string& secret) {
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
  } else if (group.slot && ctx.cgroups->out_of_memory(*group.slot)) {
    r.result = "failed: out of memory (the sample's processes together exceeded " +
               std::to_string(ctx.o.memory_mb) + " MiB)";
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
}

}  // namespace

ExecResult run_one(const std::string& program, const Context& ctx, int slot) {
  const SandboxOptions& o = ctx.o;
  Plan p = base_plan(ctx, slot);
  Descriptors fds;
  FolderCleanup cleanup;
  prepare_work_folder(p, program, cleanup);
  plan_namespace(p, ctx);
  plan_limits(p, o, ctx.root);
  const std::string secret = open_descriptors(p, program, fds);
  CgroupLease group{ctx.cgroups, nullptr};
  if (ctx.cgroups) {
    group.slot = ctx.cgroups->acquire(o.memory_mb, o.processes);
    p.cgroup_procs = group.slot->procs;
  }
  std::vector<char*> argv = c_strings(p.argv);
  std::vector<char*> envp = c_strings(p.envp);

  const auto start = std::chrono::steady_clock::now();
  pid_t pid = ::fork();
  if (pid < 0) throw Error(std::string("sandbox: fork failed: ") + std::strerror(errno));
  if (pid == 0) child_main(p, argv.data(), envp.data());

  int status = 0;
  const bool timed_out = wait_or_kill(pid, o.timeout_s, start, status);
  ::kill(-pid, SIGKILL);  // stragglers of the process group (unsafe mode has no namespace)
  if (p.sandbox && ctx.root && timed_out) {
    // Wait until the namespace is gone, so that the next program of this worker's uid
    // starts with a process count of zero.
    for (int i = 0; i < 400 && processes_of(p.uid) > 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }

  ExecResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  judge(r, p, ctx, group, status, timed_out, secret);
  return r;
}

}  // namespace sft::eval::sandbox_internal
