// The sandbox's entry points (sandbox.h): probing which isolation works here, the settings
// every program of a batch shares (interpreter, Landlock rules, cgroups), and the pool of
// workers that runs the programs. Also the host's mount points and the Landlock rules.
#include "sft/eval/sandbox.h"

#include <dirent.h>
#include <linux/landlock.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "sandbox_internal.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/log.h"

namespace sft::eval {
namespace sandbox_internal {

// /proc and below are left out: the child mounts a fresh /proc over them.
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
      if (o == "nosuid")
        flags |= MS_NOSUID;
      else if (o == "nodev")
        flags |= MS_NODEV;
      else if (o == "noexec")
        flags |= MS_NOEXEC;
      else if (o == "noatime")
        flags |= MS_NOATIME;
      else if (o == "nodiratime")
        flags |= MS_NODIRATIME;
      else if (o == "relatime")
        flags |= MS_RELATIME;
      else if (o == "strictatime")
        flags |= MS_STRICTATIME;
    }
    out.push_back({path, flags});
  }
  return out;
}

std::pair<uid_t, ino_t> identity() {
  struct stat st {};
  ::stat("/proc/self/ns/user", &st);
  return {::geteuid(), st.st_ino};
}

int landlock_abi() {
  const long abi = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return abi > 0 ? static_cast<int>(abi) : 0;
}

std::uint64_t landlock_handled(int abi) {
  if (abi < 1) return 0;
  std::uint64_t all = (1ULL << 13) - 1;  // EXECUTE .. MAKE_SYM (ABI 1)
  if (abi >= 2) all |= 1ULL << 13;       // REFER
  if (abi >= 3) all |= 1ULL << 14;       // TRUNCATE
  return all;
}

namespace {

constexpr std::uint64_t kRead =
    LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_EXECUTE;

// Adds rules for the world-readable part of `dir`; true when all of it is (the caller then
// covers it with one rule). Symbolic links count as readable: Landlock judges their targets.
bool world_readable(const std::string& dir, std::vector<LandlockRule>& rules) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return false;
  struct Entry {
    std::string path;
    bool ok;
    std::vector<LandlockRule> inner;
  };
  std::vector<Entry> entries;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    Entry x{dir + "/" + name, false, {}};
    struct stat st;
    if (::lstat(x.path.c_str(), &st) == 0) {
      if (S_ISLNK(st.st_mode))
        x.ok = true;
      else if (S_ISREG(st.st_mode))
        x.ok = (st.st_mode & S_IROTH) != 0;
      else if (S_ISDIR(st.st_mode) && (st.st_mode & S_IROTH) && (st.st_mode & S_IXOTH))
        x.ok = world_readable(x.path, x.inner);
    }
    entries.push_back(std::move(x));
  }
  ::closedir(d);
  if (std::all_of(entries.begin(), entries.end(), [](const Entry& x) { return x.ok; })) return true;
  for (auto& x : entries) {
    if (x.ok)
      rules.push_back({x.path, kRead});
    else
      rules.insert(rules.end(), x.inner.begin(), x.inner.end());
  }
  return false;
}

// The installation an interpreter belongs to: <prefix>/bin/python3 -> <prefix>, when that
// holds a virtual environment or a lib/python3.* folder; else only the file itself.
std::string python_prefix(const std::string& exe) {
  std::string dir = fs::dirname(exe);
  if (fs::basename(dir) == "bin") dir = fs::dirname(dir);
  if (fs::exists(dir + "/pyvenv.cfg")) return dir;
  if (fs::is_dir(dir + "/lib"))
    for (const auto& name : fs::list_dir(dir + "/lib"))
      if (name.rfind("python3", 0) == 0) return dir;
  return exe;
}

}  // namespace

std::vector<LandlockRule> landlock_rules(const std::string& python, int abi) {
  const std::vector<std::string> system = {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"};
  std::vector<LandlockRule> rules;
  for (const auto& dir : system) rules.push_back({dir, kRead});
  char real[PATH_MAX];
  std::vector<std::string> exes = {python};
  if (::realpath(python.c_str(), real)) exes.push_back(real);
  for (const auto& exe : exes) {
    const std::string prefix = python_prefix(exe);
    const bool covered = std::any_of(system.begin(), system.end(), [&](const std::string& d) {
      return prefix == d || prefix.rfind(d + "/", 0) == 0;
    });
    if (!covered) rules.push_back({prefix, kRead});
  }
  if (world_readable("/etc", rules)) rules.push_back({"/etc", kRead});
  rules.push_back({"/tmp", landlock_handled(abi)});
  rules.push_back({"/dev", LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE |
                               LANDLOCK_ACCESS_FS_READ_DIR | (abi >= 3 ? (1ULL << 14) : 0)});
  rules.push_back({"/proc", LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR});
  return rules;
}

}  // namespace sandbox_internal

namespace {

using sandbox_internal::Context;
using sandbox_internal::identity;
using sandbox_internal::run_one;
using sandbox_internal::SampleCgroups;

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

Context make_context(const SandboxOptions& o, PassRule rule, bool root, bool cgroups) {
  Context c;
  c.o = o;
  c.python = resolve_python(o.python);
  c.rule = rule;
  c.root = root;
  if (!o.unsafe_no_sandbox && !root) {
    const int abi = sandbox_internal::landlock_abi();
    c.landlock_handled = sandbox_internal::landlock_handled(abi);
    if (c.landlock_handled) c.landlock = sandbox_internal::landlock_rules(c.python, abi);
  }
  if (cgroups) c.cgroups = SampleCgroups::get(nullptr);
  return c;
}

// How the sandbox works here, probed once per identity by running a trivial program: as root
// (real root: privilege drop to a per-worker uid), else in a user namespace (also the fallback
// for a root that is itself inside a user namespace, where other uids are not mapped).
struct Probe {
  bool ok = false, root = false;
  std::string reason;
};

const Probe& probe() {
  static std::mutex mutex;
  static std::map<std::pair<uid_t, ino_t>, Probe> probes;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = probes.find(identity());
  if (it != probes.end()) return it->second;
  Probe r;
  // Test hook: a node where the sandbox cannot run, without needing one.
  if (const char* reason = std::getenv("SFT_TEST_SANDBOX_UNAVAILABLE")) {
    r.reason = reason;
    return probes.emplace(identity(), r).first->second;
  }
  SandboxOptions o;
  o.timeout_s = 30;
  std::vector<bool> modes;
  if (::geteuid() == 0) modes.push_back(true);
  modes.push_back(false);
  for (bool root : modes) {
    const std::string mode = root ? "as root: " : "in a user namespace: ";
    try {
      ExecResult e = run_one("print('ok')\n", make_context(o, PassRule::harness, root, /*cgroups=*/false), 0);
      if (e.passed) {
        r.ok = true;
        r.root = root;
        break;
      }
      r.reason += (r.reason.empty() ? "" : "; ") + mode + e.result;
    } catch (const std::exception& ex) {
      r.reason += (r.reason.empty() ? "" : "; ") + mode + ex.what();
    }
  }
  if (!r.ok)
    r.reason +=
        " (the sandbox needs root, or unprivileged user namespaces: sysctl "
        "kernel.unprivileged_userns_clone=1 "
        "and user.max_user_namespaces > 0)";
  return probes.emplace(identity(), r).first->second;
}

// What this run's isolation lacks, said once per process and kind.
void notice(const std::string& text) {
  static std::mutex mutex;
  static std::set<std::string> said;
  std::lock_guard<std::mutex> lock(mutex);
  if (said.insert(text).second) sft::log::warn("{}", text);
}

void notice_limits(const Context& ctx) {
  if (ctx.o.unsafe_no_sandbox) return;
  std::string why;
  if (!SampleCgroups::get(&why))
    notice("sandbox: no cgroup per sample here (" + why + "): each process is held to " +
           std::to_string(ctx.o.memory_mb) + " MiB of address space, but not a sample's " +
           std::to_string(ctx.o.processes) +
           " processes together, and a sample's CPU share grows with its processes");
  if (ctx.root) return;
  if (ctx.landlock_handled)
    notice(
        "sandbox: not root: programs run in a user namespace under your own uid; Landlock lets them read "
        "only "
        "/usr, /bin, /sbin, /lib*, the interpreter's installation and the world-readable files of /etc");
  else
    notice(
        "sandbox: not root and no Landlock in this kernel: programs run in a user namespace under your own "
        "uid "
        "and can read every file you can");
}

}  // namespace

bool sandbox_available(std::string* why) {
  const Probe& p = probe();
  if (why) *why = p.reason;
  return p.ok;
}

bool sandbox_cgroups_available(std::string* why) { return SampleCgroups::get(why) != nullptr; }

std::vector<ExecResult> run_programs(const std::vector<std::string>& programs, const SandboxOptions& o,
                                     PassRule rule) {
  std::string why;
  if (!o.unsafe_no_sandbox && !sandbox_available(&why))
    throw Error(
        "HumanEval sandbox unavailable: " + why +
        "; refusing to run untrusted code (--unsafe-no-sandbox runs it without isolation, at your own risk)");
  if (o.unsafe_no_sandbox) sandbox_internal::remove_stale_folders();
  const Context ctx =
      make_context(o, rule, o.unsafe_no_sandbox ? ::geteuid() == 0 : probe().root, /*cgroups=*/true);
  notice_limits(ctx);
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
        throw ConfigError("--python " + ctx.python + ": cannot run a one-line program in the sandbox (" +
                          e.result + "); give a working python3 interpreter");
      checked.insert(ctx.python);
    }
  }
  std::vector<ExecResult> results(programs.size());
  std::atomic<std::size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  const int workers = static_cast<int>(std::clamp<std::size_t>(
      static_cast<std::size_t>(std::max(1, o.workers)), 1, std::max<std::size_t>(1, programs.size())));
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
