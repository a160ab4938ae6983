// Per-sample cgroups (sandbox_internal.h): finding the evaluator's own cgroup, making one
// group per sample with its limits, and removing it once the sample's processes are gone.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "sandbox_internal.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft::eval::sandbox_internal {
namespace {

// The evaluator's group is sft-sandbox.<evaluator pid> (v2's leaf: sft-sandbox.<pid>.evaluator),
// its samples' groups are numbered inside it, so that those of an evaluator killed with
// SIGKILL are recognised and removed by the next one.
constexpr const char* kPrefix = "sft-sandbox.";
bool write_text(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The words of `s` split at `sep`, or at any white space for ' '.
std::vector<std::string> words(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string w;
  std::istringstream in(s);
  if (sep == ' ') {
    while (in >> w) out.push_back(w);
    return out;
  }
  while (std::getline(in, w, sep))
    if (!w.empty()) out.push_back(w);
  return out;
}

bool has(const std::vector<std::string>& list, const std::string& word) {
  return std::find(list.begin(), list.end(), word) != list.end();
}

struct Hierarchy {
  std::string mount, root;
  bool v2 = false;
  std::vector<std::string> controllers;  // v1: from the super options
};

// The cgroup file systems mounted here (/proc/self/mountinfo).
std::vector<Hierarchy> hierarchies() {
  std::vector<Hierarchy> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    const auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream a(line.substr(0, dash)), b(line.substr(dash + 3));
    std::string id, parent, devno, root, point, fstype, source, super;
    a >> id >> parent >> devno >> root >> point;
    b >> fstype >> source >> super;
    if (fstype != "cgroup" && fstype != "cgroup2") continue;
    out.push_back({point, root, fstype == "cgroup2", words(super, ',')});
  }
  return out;
}

// The evaluator's cgroup in the v1 hierarchy of `controller`, or in v2 for "".
std::string own_path(const std::string& controller) {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    const auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string id = line.substr(0, a), list = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (controller.empty() ? id == "0" && list.empty() : has(words(list, ','), controller)) return path;
  }
  return "";
}

// Where `own` lies in the file system of hierarchy `h` ("" when it is outside its mount).
std::string folder(const Hierarchy& h, const std::string& own) {
  if (own.empty()) return "";
  if (h.root == "/") return own == "/" ? h.mount : h.mount + own;
  if (own.rfind(h.root, 0) != 0) return "";
  return h.mount + own.substr(h.root.size());
}

// The kernel's weight for a nice level: 1024 at 0, a factor 1.25 per step.
int weight_of_nice(int nice) {
  return static_cast<int>(std::clamp(std::lround(1024.0 / std::pow(1.25, nice)), 2L, 262144L));
}

// What the evaluator weighs on the CPU: with autogroups (and the evaluator in the root cpu
// group) its session's group, at the autogroup's nice; else the evaluator's nice level.
int evaluator_weight(bool in_root_cpu_group) {
  if (in_root_cpu_group && read_text("/proc/sys/kernel/sched_autogroup_enabled").rfind('1', 0) == 0) {
    const std::string ag = read_text("/proc/self/autogroup");  // "/autogroup-11 nice 0"
    const auto at = ag.find(" nice ");
    if (at != std::string::npos) return weight_of_nice(std::atoi(ag.c_str() + at + 6));
  }
  errno = 0;
  const int nice = ::getpriority(PRIO_PROCESS, 0);
  return weight_of_nice(errno == 0 ? nice : 0);
}

// Removes a group and the sample groups in it; fails, harmlessly, while one holds processes.
void remove_group(const std::string& dir) {
  if (DIR* d = ::opendir(dir.c_str())) {
    std::vector<std::string> inner;
    while (dirent* e = ::readdir(d))
      if (e->d_type == DT_DIR && e->d_name[0] != '.') inner.push_back(dir + "/" + e->d_name);
    ::closedir(d);
    for (const auto& i : inner) ::rmdir(i.c_str());
  }
  ::rmdir(dir.c_str());
}

void remove_stale(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> stale;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.rfind(kPrefix, 0) != 0) continue;
    const long pid = std::strtol(name.c_str() + std::strlen(kPrefix), nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)
      stale.push_back(dir + "/" + name);
  }
  ::closedir(d);
  for (const auto& s : stale) remove_group(s);
}

// The evaluator's cgroup folder in the v1 hierarchy of `controller` ("" when none has it).
std::string v1_folder(const std::vector<Hierarchy>& hs, const std::string& controller) {
  for (const auto& h : hs)
    if (!h.v2 && has(h.controllers, controller)) return folder(h, own_path(controller));
  return "";
}

// The evaluator's group in `parent` (made once, removed at exit); "" and `why` when this
// identity cannot make one.
std::string make_group(const std::string& parent, std::string* why) {
  remove_stale(parent);
  const std::string dir = parent + "/" + kPrefix + std::to_string(::getpid());
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    *why = "cannot make a cgroup in " + parent + ": " + std::strerror(errno);
    return "";
  }
  return dir;
}

}  // namespace

SampleCgroups* SampleCgroups::get(std::string* why) {
  // Per identity: a forked child that became another user must not use the parent's groups.
  static std::mutex mutex;
  static std::map<std::pair<uid_t, ino_t>, std::pair<std::unique_ptr<SampleCgroups>, std::string>> made;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = made.find(identity());
  if (it == made.end()) {
    std::string reason;
    std::unique_ptr<SampleCgroups> c = make(&reason);
    it = made.emplace(identity(), std::make_pair(std::move(c), reason)).first;
  }
  if (why) *why = it->second.second;
  return it->second.first.get();
}

std::unique_ptr<SampleCgroups> SampleCgroups::make(std::string* reason) {
  std::unique_ptr<SampleCgroups> c(new SampleCgroups);
  const auto hs = hierarchies();
  const std::string memory = v1_folder(hs, "memory"), pids = v1_folder(hs, "pids"),
                    cpu = v1_folder(hs, "cpu");
  const auto v2 = std::find_if(hs.begin(), hs.end(), [](const Hierarchy& h) { return h.v2; });
  if (!memory.empty() && !pids.empty())
    c->use_v1(memory, pids, cpu, reason);
  else if (v2 != hs.end())
    c->use_v2(folder(*v2, own_path("")), reason);
  else
    *reason = "no cgroup hierarchy with the memory and pids controllers is mounted";
  if (c->kind_.empty()) c.reset();
  return c;
}

void SampleCgroups::use_v1(const std::string& memory, const std::string& pids, const std::string& cpu,
                           std::string* reason) {
  memory_ = make_group(memory, reason);
  pids_ = memory_.empty() ? "" : make_group(pids, reason);
  std::string no_cpu;
  cpu_ = cpu.empty() || pids_.empty() ? "" : make_group(cpu, &no_cpu);
  if (!cpu_.empty() &&
      !write_text(cpu_ + "/cpu.shares", std::to_string(evaluator_weight(own_path("cpu") == "/")))) {
    remove_group(cpu_);
    cpu_.clear();
  }
  if (!pids_.empty()) kind_ = std::string("cgroup v1: memory, pids") + (cpu_.empty() ? "" : ", cpu");
}

// Not exercised by the tests here (their machine has cgroup v1).
void SampleCgroups::use_v2(const std::string& home, std::string* reason) {
  const auto offered = words(read_text(home + "/cgroup.controllers"), ' ');
  if (home.empty() || !has(offered, "memory") || !has(offered, "pids")) {
    *reason = "the cgroup v2 group " + (home.empty() ? std::string("of this process") : home) +
              " does not offer the memory and pids controllers";
    return;
  }
  remove_stale(home);
  v2_ = true;
  v2_home_ = home;
  delegate_v2(offered, reason);
  const std::string group = reason->empty() ? make_group(home, reason) : "";
  std::string pass = "+memory +pids";
  if (has(offered, "cpu")) pass += " +cpu";
  if (!group.empty() && write_text(group + "/cgroup.subtree_control", pass)) {
    memory_ = pids_ = group;
    if (has(offered, "cpu")) cpu_ = group;
    kind_ = std::string("cgroup v2: memory, pids") + (cpu_.empty() ? "" : ", cpu");
  } else if (!group.empty()) {
    *reason = "cannot enable memory and pids in " + group + ": " + std::strerror(errno);
    ::rmdir(group.c_str());
  }
}

// Enables the controllers the cgroup offers but does not pass down yet (`reason` when it cannot).
void SampleCgroups::delegate_v2(const std::vector<std::string>& offered, std::string* reason) {
  const std::string& home = v2_home_;
  std::string enable;
  const auto enabled = words(read_text(home + "/cgroup.subtree_control"), ' ');
  for (const char* ctl : {"memory", "pids", "cpu"})
    if (has(offered, ctl) && !has(enabled, ctl)) enable += std::string(enable.empty() ? "" : " ") + "+" + ctl;
  if (enable.empty()) return;
  // A cgroup with processes cannot pass controllers down: move into a leaf first.
  v2_leaf_ = home + "/" + kPrefix + std::to_string(::getpid()) + ".evaluator";
  if ((::mkdir(v2_leaf_.c_str(), 0755) != 0 && errno != EEXIST) ||
      !write_text(v2_leaf_ + "/cgroup.procs", std::to_string(::getpid())) ||
      !write_text(home + "/cgroup.subtree_control", enable)) {
    *reason = "cannot delegate memory and pids below " + home + " (" + std::strerror(errno) +
              "; it must be writable and hold no process but sft's)";
    write_text(home + "/cgroup.procs", std::to_string(::getpid()));
    ::rmdir(v2_leaf_.c_str());
    v2_leaf_.clear();
  } else {
    v2_enabled_ = enable;
  }
}

std::shared_ptr<SampleCgroups::Slot> SampleCgroups::acquire(std::int64_t memory_mb, std::int64_t processes) {
  int n;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    n = made_++;
  }
  const std::string name = std::to_string(n);
  auto slot = std::make_shared<Slot>();
  struct Undo {
    SampleCgroups* self;
    std::shared_ptr<Slot>* slot;
    bool armed = true;
    ~Undo() {
      if (armed) self->release(*slot);
    }
  } undo{this, &slot};
  auto make = [&](const std::string& base) {
    const std::string dir = base + "/" + name;
    if (::mkdir(dir.c_str(), 0755) != 0)
      throw Error("sandbox: cannot make the sample's cgroup " + dir + ": " + std::strerror(errno));
    slot->dirs.push_back(dir);
    slot->procs.push_back(dir + "/cgroup.procs");
    return dir;
  };
  auto set = [](const std::string& file, const std::string& value, bool optional = false) {
    if (optional && !fs::exists(file)) return;
    if (!write_text(file, value))
      throw Error("sandbox: cannot set " + file + " to " + value + ": " + std::strerror(errno));
  };
  // pids.max counts the sandbox's own process above the program's namespace too.
  const std::string bytes = std::to_string(memory_mb << 20), count = std::to_string(processes + 1);
  if (!v2_) {
    const std::string memory = make(memory_), pids = make(pids_);
    set(memory + "/memory.limit_in_bytes", bytes);
    set(memory + "/memory.memsw.limit_in_bytes", bytes, /*optional=*/true);  // where swap is accounted
    set(pids + "/pids.max", count);
    if (!cpu_.empty()) make(cpu_);  // the default weight, the same for every sample
  } else {
    const std::string dir = make(memory_);
    set(dir + "/memory.max", bytes);
    set(dir + "/memory.swap.max", "0", /*optional=*/true);
    set(dir + "/pids.max", count);
  }
  undo.armed = false;
  return slot;
}

bool SampleCgroups::out_of_memory(const Slot& slot) const {
  // v1: memory.oom_control, v2: memory.events; both have an "oom_kill N" line.
  const std::string file =
      slot.dirs.empty() ? "" : slot.dirs[0] + (v2_ ? "/memory.events" : "/memory.oom_control");
  const std::string text = read_text(file);
  const auto at = text.find("oom_kill ");
  return at != std::string::npos && std::strtol(text.c_str() + at + 9, nullptr, 10) > 0;
}

void SampleCgroups::release(std::shared_ptr<Slot> slot) {
  if (!slot) return;
  // After a timeout the namespace's processes die a moment after its init.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (auto d = slot->dirs.rbegin(); d != slot->dirs.rend(); ++d) {
    while (::rmdir(d->c_str()) != 0 && errno == EBUSY && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

SampleCgroups::~SampleCgroups() {
  for (const auto& dir : {cpu_, pids_, memory_})
    if (!dir.empty()) remove_group(dir);  // v2: one folder, removed by the first
  if (v2_leaf_.empty()) return;
  std::string disable = v2_enabled_;
  std::replace(disable.begin(), disable.end(), '+', '-');
  write_text(v2_home_ + "/cgroup.subtree_control", disable);
  write_text(v2_home_ + "/cgroup.procs", std::to_string(::getpid()));
  ::rmdir(v2_leaf_.c_str());
}

}  // namespace sft::eval::sandbox_internal
