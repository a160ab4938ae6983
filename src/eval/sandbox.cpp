#include "sft/eval/sandbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
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
  uid_t uid = 0;  // root: the unprivileged uid to run as
  std::string work, tmpfs_opts, uid_map, gid_map;
  std::vector<MountPoint> mounts;
  std::vector<std::string> argv, envp;
  rlim_t cpu_s = 0, as_bytes = 0, fsize_bytes = 0, nproc = 0;  // nproc 0: left unchanged
  int in_fd = -1, out_fd = -1, err_fd = -1;
};

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

// PID 1 of the new PID namespace: finishes the isolation and becomes the program.
[[noreturn]] void exec_program(const Plan& p, char* const* argv, char* const* envp) {
  if (p.sandbox) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("prctl(PDEATHSIG)");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) die("making mounts private");
    if (::mount("tmpfs", p.work.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, p.tmpfs_opts.c_str()) != 0)
      die("mounting the tmpfs working directory");
    for (const auto& m : p.mounts)
      if (::mount(nullptr, m.path.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | m.flags, nullptr) != 0 &&
          errno != ENOENT)
        die("remounting read-only");
    if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) die("mounting /proc");
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
  if (p.sandbox && ::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("prctl(PDEATHSIG)");  // cleared by setresuid
  ::syscall(SYS_close_range, 3U, ~0U, 0U);
  ::execve(argv[0], argv, envp);
  die("exec python");
}

[[noreturn]] void child_main(const Plan& p, char* const* argv, char* const* envp) {
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
  std::string python, end_marker;
  std::vector<MountPoint> mounts;
  bool root = true;
};

ExecResult run_one(const std::string& program, const Context& ctx, int slot) {
  const SandboxOptions& o = ctx.o;
  std::string tmpl = temp_root() + "/sft_sandbox.XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw Error("sandbox: cannot create a temporary directory in " + temp_root() + ": " + std::strerror(errno));
  const std::string base = tmpl;
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      try {
        fs::remove_all(dir);
      } catch (...) {
      }
    }
  } cleanup{base};
  ::chmod(base.c_str(), 0711);  // the sandbox uid may traverse it to reach prog.py and work/, not list it
  const std::string work = base + "/work", prog = base + "/prog.py";
  if (::mkdir(work.c_str(), 0700) != 0) throw Error("sandbox: mkdir " + work + ": " + std::strerror(errno));
  {
    std::ofstream f(prog, std::ios::binary);
    f << program;
    if (!f) throw Error("sandbox: cannot write " + prog);
  }
  ::chmod(prog.c_str(), 0644);

  Plan p;
  p.sandbox = !o.unsafe_no_sandbox;
  p.root = ctx.root;
  p.uid = ctx.root ? static_cast<uid_t>(kSandboxUidBase + static_cast<std::uint32_t>(slot)) : ::getuid();
  p.work = work;
  p.tmpfs_opts = "size=" + std::to_string(o.tmpfs_mb) + "m,mode=0700,uid=" + std::to_string(ctx.root ? p.uid : 0) +
                 ",gid=" + std::to_string(ctx.root ? p.uid : 0);
  p.uid_map = "0 " + std::to_string(::getuid()) + " 1\n";
  p.gid_map = "0 " + std::to_string(::getgid()) + " 1\n";
  p.mounts = ctx.mounts;
  p.argv = {ctx.python, "-I", prog};
  p.envp = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + work, "TMPDIR=" + work, "LANG=C.UTF-8",
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
  const std::string out_path = base + "/stdout", err_path = base + "/stderr";
  p.in_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  p.out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  p.err_fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  auto close_fds = [&] {
    for (int fd : {p.in_fd, p.out_fd, p.err_fd})
      if (fd >= 0) ::close(fd);
  };
  if (p.in_fd < 0 || p.out_fd < 0 || p.err_fd < 0) {
    close_fds();
    throw Error("sandbox: cannot open output files in " + base + ": " + std::strerror(errno));
  }
  if (p.sandbox && ctx.root && ::chown(work.c_str(), p.uid, p.uid) != 0) {
    close_fds();
    throw Error("sandbox: chown " + work + ": " + std::strerror(errno));
  }
  std::vector<char*> argv, envp;
  for (auto& a : p.argv) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : p.envp) envp.push_back(e.data());
  envp.push_back(nullptr);

  const auto start = std::chrono::steady_clock::now();
  pid_t pid = ::fork();
  if (pid < 0) {
    close_fds();
    throw Error(std::string("sandbox: fork failed: ") + std::strerror(errno));
  }
  if (pid == 0) child_main(p, argv.data(), envp.data());
  close_fds();

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
  std::string out, err;
  try {
    out = fs::read_file(out_path);
    err = fs::read_file(err_path);
  } catch (...) {
  }
  r.stderr_tail = err.size() > 2000 ? err.substr(err.size() - 2000) : err;
  const bool exited_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  const bool reached_end = ctx.end_marker.empty() || last_line(out) == ctx.end_marker;
  if (timed_out) {
    r.result = "timed out";
  } else if (exited_ok && reached_end) {
    r.passed = true;
    r.result = "passed";
  } else {
    std::string why = last_line(err);
    if (why.empty() && exited_ok) why = "the program exited before the tests finished";
    if (why.empty() && WIFEXITED(status)) why = "exit status " + std::to_string(WEXITSTATUS(status));
    if (why.empty() && WIFSIGNALED(status)) why = "killed by signal " + std::to_string(WTERMSIG(status));
    if (WIFEXITED(status) && WEXITSTATUS(status) == kSetupFailed && why.rfind("sandbox:", 0) == 0)
      why = "sandbox setup: " + why;
    r.result = "failed: " + why;
  }
  return r;
}

Context make_context(const SandboxOptions& o, const std::string& end_marker, bool root) {
  Context c;
  c.o = o;
  c.python = resolve_python(o.python);
  c.end_marker = end_marker;
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
        ExecResult e = run_one("print('ok')\n", make_context(o, "ok", root), 0);
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
                                     const std::string& end_marker) {
  std::string why;
  if (!o.unsafe_no_sandbox && !sandbox_available(&why))
    throw Error("HumanEval sandbox unavailable: " + why +
                "; refusing to run untrusted code (--unsafe-no-sandbox runs it without isolation, at your own risk)");
  const Context ctx = make_context(o, end_marker, o.unsafe_no_sandbox ? ::geteuid() == 0 : probe().root);
  {
    // An interpreter that cannot run a trivial program would fail every sample: a 0 % score
    // that says nothing about the model. Stop instead.
    static std::mutex checked_mutex;
    static std::set<std::string> checked;
    std::lock_guard<std::mutex> lock(checked_mutex);
    if (!checked.count(ctx.python)) {
      Context trial = ctx;
      trial.end_marker = "ok";
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
