// The sandbox's entry points (sandbox.h): probing which isolation works here, the settings
// every program of a batch shares (interpreter), and the pool of workers that runs the
// programs. Also the host's mount points.
#include "sft/eval/sandbox.h"

#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "sandbox_internal.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"

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

}  // namespace sandbox_internal

namespace {

using sandbox_internal::Context;
using sandbox_internal::run_one;

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

Context make_context(const SandboxOptions& o, PassRule rule, bool root) {
  Context c;
  c.o = o;
  c.python = resolve_python(o.python);
  c.rule = rule;
  c.root = root;
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
  if (o.unsafe_no_sandbox) sandbox_internal::remove_stale_folders();
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
