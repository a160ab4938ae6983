// Running a sweep's runs: locally, as `sft train` subprocesses a few at a time (with the
// signal forwarding that lets them checkpoint and exit), or as Slurm array scripts.
#include "sft/sweep/sweep.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/log.h"
#include "sft/util/run_lock.h"

namespace sft::sweep {
namespace {

// `s` as one shell word: single-quoted, each ' written '\''.
std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The sweep's children and the signal that asks them to stop, for the signal handler
// (async-signal-safe: plain stores and kill()).
constexpr int kMaxChildren = 256;
volatile sig_atomic_t g_stop_signal = 0;
volatile pid_t g_children[kMaxChildren] = {};

void forward_signal(int sig) {
  g_stop_signal = sig;
  for (int i = 0; i < kMaxChildren; ++i)
    if (g_children[i] > 0) ::kill(g_children[i], sig);
}

void remember_child(pid_t pid, bool add) {
  for (int i = 0; i < kMaxChildren; ++i)
    if (add ? g_children[i] == 0 : g_children[i] == pid) {
      g_children[i] = add ? pid : 0;
      return;
    }
}

// SIGTERM and SIGINT's handlers before the sweep's, and the set of the two.
struct StopSignals {
  struct sigaction old_term, old_int;
  sigset_t set;
};

// Sends SIGTERM and SIGINT on to the children. No SA_RESTART: a signal interrupts waitpid, so
// the sweep notices it at once.
StopSignals forward_stop_signals() {
  g_stop_signal = 0;
  StopSignals s{};
  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, &s.old_term);
  ::sigaction(SIGINT, &sa, &s.old_int);
  sigemptyset(&s.set);
  sigaddset(&s.set, SIGTERM);
  sigaddset(&s.set, SIGINT);
  return s;
}

void restore_stop_signals(const StopSignals& s) {
  ::sigaction(SIGTERM, &s.old_term, nullptr);
  ::sigaction(SIGINT, &s.old_int, nullptr);
}

// In the forked child: becomes the run (argv), its output appended to `log`; never returns.
[[noreturn]] void exec_run(pid_t parent, const sigset_t& unblocked, const std::string& log,
                           std::vector<char*>& argv) {
  // Its own process group: a terminal's Ctrl-C reaches it once, through the sweep.
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // the sweep killed outright: checkpoint and exit
  if (::getppid() != parent) ::_exit(128 + SIGTERM);
  ::signal(SIGTERM, SIG_DFL);
  ::signal(SIGINT, SIG_DFL);
  ::sigprocmask(SIG_SETMASK, &unblocked, nullptr);
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0644);  // never through a link
  if (fd < 0) ::_exit(126);
  ::dup2(fd, 1);
  ::dup2(fd, 2);
  ::execv(argv[0], argv.data());
  ::_exit(127);
}

// The sweep's runs as `sft train` children, at most `jobs` at once.
class LocalSweep {
 public:
  LocalSweep(const SweepSpec& spec, const std::vector<SweepRun>& runs, const std::string& sft_binary,
             int jobs)
      : spec_(spec), runs_(runs), sft_binary_(sft_binary), jobs_(jobs) {
    // Concurrent runs split the cores between them (small models scale poorly past a few
    // threads, so two 1-thread runs beat one 2-thread run on 2 cores).
    const long cores = std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN));
    threads_ = std::to_string(std::max(1L, cores / jobs));
  }

  // Starts each run not finished nor held elsewhere, in order, until all are started or a stop.
  void start_all(const sigset_t& stop_signals) {
    for (std::size_t i = 0; i < runs_.size() && !stopping_ && !g_stop_signal; ++i) {
      if (already_finished(i)) continue;
      while (static_cast<int>(running_.size()) >= jobs_ && !g_stop_signal) reap_one();
      if (stopping_ || g_stop_signal) break;
      if (held_elsewhere(i)) continue;
      if (!start(i, stop_signals)) break;
    }
  }

  // Waits for every run started (after a signal: for each to save a checkpoint and exit).
  void wait_all() {
    if (g_stop_signal && !running_.empty())
      sft::log::warn("sweep {}: signal {}: waiting for {} run(s) to save a checkpoint and exit", spec_.name,
                     static_cast<int>(g_stop_signal), running_.size());
    while (!running_.empty()) reap_one();
  }

  LocalResult result;

 private:
  struct Child {
    std::size_t index;
    std::chrono::steady_clock::time_point start;
  };

  bool already_finished(std::size_t i) const {
    const auto& r = runs_[i];
    if (!run_finished(r)) return false;
    sft::log::info("sweep {}: run {}/{} {} already finished ({})", spec_.name, i + 1, runs_.size(), r.name,
                   r.dir);
    return true;
  }

  bool held_elsewhere(std::size_t i) {
    const auto& r = runs_[i];
    const std::string who = RunLock::holder(r.dir);
    if (who.empty()) return false;
    ++result.skipped;
    sft::log::warn("sweep {}: run {}/{} {} skipped: {} is in use by {}", spec_.name, i + 1, runs_.size(),
                   r.name, r.dir, who);
    return true;
  }

  std::vector<std::string> train_argv(const SweepRun& r) const {
    std::vector<std::string> argv = {sft_binary_, "train", "--config", r.config_path, "--resume", "auto"};
    if (jobs_ > 1) argv.insert(argv.end(), {"--set", "train.threads=" + threads_});
    return argv;
  }

  // Forks run i's child; false when a stop signal came first and nothing was started.
  bool start(std::size_t i, const sigset_t& stop_signals) {
    const auto& r = runs_[i];
    const bool resume = fs::is_dir(fs::join(r.dir, "checkpoints"));
    sft::log::info("sweep {}: run {}/{} {} {}-> {}", spec_.name, i + 1, runs_.size(), r.name,
                   resume ? "(resuming) " : "", r.dir);
    const std::string log = fs::join(r.dir, "train.log");
    std::vector<std::string> argv = train_argv(r);
    std::vector<char*> a;
    for (auto& x : argv) a.push_back(const_cast<char*>(x.c_str()));
    a.push_back(nullptr);
    const pid_t parent = ::getpid();
    // Blocked from fork until the child is on the list, so no signal can miss it.
    sigset_t unblocked;
    ::sigprocmask(SIG_BLOCK, &stop_signals, &unblocked);
    if (g_stop_signal) {  // it came while this run was being prepared: start nothing
      ::sigprocmask(SIG_SETMASK, &unblocked, nullptr);
      return false;
    }
    pid_t pid = ::fork();
    if (pid == 0) exec_run(parent, unblocked, log, a);
    if (pid > 0) {
      running_[pid] = {i, std::chrono::steady_clock::now()};
      remember_child(pid, true);
    }
    ::sigprocmask(SIG_SETMASK, &unblocked, nullptr);
    if (pid < 0) throw Error("sweep " + spec_.name + ": cannot start a run (fork failed)");
    return true;
  }

  // Waits for one child to end and records how it ended.
  void reap_one() {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    if (pid <= 0 || !running_.count(pid)) return;
    remember_child(pid, false);
    const Child c = running_.at(pid);
    running_.erase(pid);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - c.start).count();
    note_exit(runs_[c.index], status, secs);
  }

  // Logs a child's end; counts it as skipped or failed, and a failure by a stop signal stops the sweep.
  void note_exit(const SweepRun& r, int status, double secs) {
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      sft::log::info("sweep {}: run {} done in {:.0f} s", spec_.name, r.name, secs);
      return;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 75) {  // RunLockedError: another process took it first
      ++result.skipped;
      sft::log::warn("sweep {}: run {} skipped: another process holds {} (see {})", spec_.name, r.name, r.dir,
                     fs::join(r.dir, "train.log"));
      return;
    }
    ++result.failed;
    sft::log::error("sweep {}: run {} failed (exit {}); see {}", spec_.name, r.name,
                    WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
                    fs::join(r.dir, "train.log"));
    if (WIFSIGNALED(status) && (WTERMSIG(status) == SIGINT || WTERMSIG(status) == SIGTERM)) stopping_ = true;
    if (WIFEXITED(status) && (WEXITSTATUS(status) == 130 || WEXITSTATUS(status) == 143))
      stopping_ = true;  // by a signal
  }

  const SweepSpec& spec_;
  const std::vector<SweepRun>& runs_;
  const std::string& sft_binary_;
  const int jobs_;
  std::string threads_;
  std::map<pid_t, Child> running_;
  bool stopping_ = false;
};

}  // namespace

LocalResult run_local(const SweepSpec& spec, const std::vector<SweepRun>& runs, const std::string& sft_binary,
                      int jobs) {
  LocalSweep sweep(spec, runs, sft_binary, std::clamp(jobs, 1, kMaxChildren));
  const StopSignals signals = forward_stop_signals();
  sweep.start_all(signals.set);
  sweep.wait_all();
  restore_stop_signals(signals);
  sweep.result.signal = g_stop_signal;
  return sweep.result;
}

std::string emit_slurm(const SweepSpec& spec, const std::vector<SweepRun>& runs,
                       const std::string& sft_binary) {
  // Each task is sized from its run's dist.gpus (the paper: 8 A100s for 7B/13B, 16 for 33B):
  // one rank per GPU, whole nodes of 8 beyond that, each rank with its share of the node's
  // CPUs (the job takes whole nodes). Runs of different sizes go to separate
  // arrays (sweep-<N>gpu.sbatch), since the tasks of one array share their resources.
  std::map<int, std::vector<const SweepRun*>> by_gpus;
  for (const auto& r : runs) by_gpus[r.gpus > 0 ? r.gpus : 8].push_back(&r);
  fs::make_dirs(fs::join(spec.output_dir, "logs"));
  std::string scripts;
  for (const auto& [gpus, group] : by_gpus) {
    const std::string suffix = by_gpus.size() == 1 ? "" : "-" + std::to_string(gpus) + "gpu";
    std::string list;
    for (const SweepRun* r : group) list += r->config_path + "\n";
    const std::string list_path = fs::join(spec.output_dir, "runs" + suffix + ".txt");
    fs::write_file_atomic(list_path, list);
    const std::string script = fs::join(spec.output_dir, "sweep" + suffix + ".sbatch");
    const int nodes = (gpus + 7) / 8, per_node = std::min(gpus, 8);
    std::string s =
        "#!/bin/bash\n"
        "# Slurm array for sweep " +
        spec.name + " (" + spec.file + "): one task per run, " + std::to_string(group.size()) + " runs of " +
        std::to_string(gpus) +
        " GPUs.\n"
        "# Submit from the repository root: sbatch " +
        script +
        "\n"
        "# Each task trains (resuming when requeued) and evaluates one run; then: sft sweep report "
        "--config " +
        spec.file +
        "\n"
        "#SBATCH --job-name=sft-" +
        spec.name + suffix +
        "\n"
        "#SBATCH --array=0-" +
        std::to_string(group.size() - 1) +
        "\n"
        "#SBATCH --nodes=" +
        std::to_string(nodes) + "\n#SBATCH --ntasks-per-node=" + std::to_string(per_node) +
        "\n#SBATCH --gpus-per-node=" + std::to_string(per_node) +
        "\n#SBATCH --exclusive\n"
        "#SBATCH --time=48:00:00\n#SBATCH --signal=TERM@300\n#SBATCH --requeue\n"
        "#SBATCH --output=" +
        fs::join(spec.output_dir, "logs/%x-%A_%a.out") +
        "\n"
        "set -euo pipefail\n"
        "CONFIG=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" " +
        shell_quote(list_path) +
        ")\n"
        "export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}\n"
        "# Each rank gets its share of the node's CPUs (as scripts/slurm/train.sbatch does).\n"
        "ranks_per_node=${SLURM_NTASKS_PER_NODE:-" +
        std::to_string(per_node) +
        "}\n"
        "ranks_per_node=${ranks_per_node%%(*}\n"
        "cpus_per_task=$(( ${SLURM_CPUS_ON_NODE:-$ranks_per_node} / ranks_per_node ))\n"
        "(( cpus_per_task >= 1 )) || cpus_per_task=1\n"
        "export OMP_NUM_THREADS=$cpus_per_task\n"
        "srun --kill-on-bad-exit=1 --cpus-per-task=\"$cpus_per_task\" " +
        shell_quote(sft_binary) + " train --config \"$CONFIG\" --resume auto\n";
    fs::write_file_atomic(script, s);
    scripts += (scripts.empty() ? "" : "\n") + script;
  }
  return scripts;
}

}  // namespace sft::sweep
