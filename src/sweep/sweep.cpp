#include "sft/sweep/sweep.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fcntl.h>
#include <map>
#include <set>

#include "config/yaml_tree.h"
#include "sft/config/run_config.h"
#include "sft/train/dry_run.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"
#include "sft/util/log.h"
#include "sft/util/run_lock.h"

namespace sft::sweep {
namespace {

// A value as --set text; lists and maps in flow style, so they stay on one line.
std::string scalar_text(const YAML::Node& n) {
  if (n.IsScalar()) return n.Scalar();
  YAML::Emitter out;
  out.SetMapFormat(YAML::Flow);
  out.SetSeqFormat(YAML::Flow);
  out << n;
  return out.c_str();
}

std::string sanitize(const std::string& v) {
  std::string out;
  for (char c : v) out.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' ? c : '_');
  return out;
}

std::string short_key(const std::string& key) {
  auto dot = key.rfind('.');
  std::string last = dot == std::string::npos ? key : key.substr(dot + 1);
  if (last == "fraction" || last == "k") {
    // datasets.math.fraction -> math.fraction, strategy.k -> k
    if (key.rfind("datasets.", 0) == 0) return key.substr(9);
    return last;
  }
  return last;
}

std::string config_text(const std::string& base, const std::vector<std::string>& overrides) {
  return config::apply_overrides_to_text(fs::read_file(base), overrides);
}

std::string stem_of(const std::string& path) {
  std::string stem = fs::basename(path);
  if (auto dot = stem.find('.'); dot != std::string::npos) stem = stem.substr(0, dot);
  return stem;
}

}  // namespace

SweepSpec load_sweep(const std::string& path, const std::vector<std::string>& overrides) {
  SweepSpec s;
  s.file = path;
  YAML::Node root;
  try {
    std::string text = fs::read_file(path);
    if (!overrides.empty()) text = config::apply_overrides_to_text(text, overrides);
    config::check_yaml_text(text, path);
    root = YAML::Load(text);
    config::check_yaml_values(root, path);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(path, e.mark.line + 1, "", "YAML syntax error: " + e.msg);
  } catch (const Error& e) {
    throw ConfigError(e.what());
  }
  std::string errors;
  auto err = [&](const YAML::Node& n, const std::string& key, const std::string& msg) {
    errors += "\n" + path + (n && !n.Mark().is_null() ? ":" + std::to_string(n.Mark().line + 1) : "") + ": " + key + ": " + msg;
  };
  if (!root.IsMap()) throw ConfigError(path + ": a sweep file is a map (name, base, set, axes, output_dir)");
  for (auto it = root.begin(); it != root.end(); ++it) {
    std::string k = it->first.Scalar();
    if (k != "name" && k != "base" && k != "set" && k != "axes" && k != "output_dir" && k != "runs_dir" && k != "description")
      err(it->first, k, "unknown key (expected name, base, set, axes, output_dir, runs_dir)");
  }
  std::string stem = fs::basename(path);
  if (auto dot = stem.rfind('.'); dot != std::string::npos) stem = stem.substr(0, dot);
  s.name = root["name"] ? root["name"].Scalar() : stem;
  const bool base_axis = root["axes"] && root["axes"].IsMap() && root["axes"]["base"];
  if (!root["base"] && !base_axis) err(root, "base", "missing: the base run config (or a `base` axis)");
  else if (root["base"]) s.base = root["base"].Scalar();
  if (!s.base.empty() && !fs::exists(s.base)) err(root["base"], "base", s.base + " not found");
  if (const YAML::Node set = root["set"]) {
    if (!set.IsMap()) err(set, "set", "expected a map of key.path: value");
    else
      for (auto it = set.begin(); it != set.end(); ++it) s.set.push_back({it->first.Scalar(), scalar_text(it->second)});
  }
  const YAML::Node axes = root["axes"];
  if (!axes || !axes.IsMap() || axes.size() == 0) {
    err(axes ? axes : root, "axes", "expected a map of key.path: [values]");
  } else {
    for (auto it = axes.begin(); it != axes.end(); ++it) {
      const std::string key = it->first.Scalar();
      std::vector<std::string> values;
      if (it->second.IsSequence()) {
        for (const auto& v : it->second) values.push_back(scalar_text(v));
      } else {
        values.push_back(scalar_text(it->second));
      }
      if (values.empty()) err(it->second, "axes." + key, "no values");
      if (key == "base")
        for (const auto& v : values)
          if (!fs::exists(v)) err(it->second, "axes.base", v + " not found");
      s.axes.push_back({key, values});
    }
  }
  {
    // Counted before anything is expanded: 8 axes of 10 values are 10^8 runs.
    constexpr double kMaxRuns = 10000;
    double runs = 1;
    std::string sizes;
    for (const auto& [key, values] : s.axes) {
      runs *= static_cast<double>(values.size());
      sizes += (sizes.empty() ? "" : " x ") + std::to_string(values.size());
    }
    if (runs > kMaxRuns) {
      char count[32];
      std::snprintf(count, sizeof count, "%.0f", runs);
      err(axes, "axes", "the grid holds " + std::string(count) + " runs (" + sizes + "); a sweep runs at most " +
                            std::to_string(static_cast<int>(kMaxRuns)) + ": split it into several sweeps");
    }
  }
  s.output_dir = root["output_dir"] ? root["output_dir"].Scalar() : "runs/sweeps/" + s.name;
  s.runs_dir = root["runs_dir"] ? root["runs_dir"].Scalar() : fs::join(s.output_dir, "runs");
  if (!errors.empty()) throw ConfigError(errors.substr(1));
  return s;
}

std::vector<SweepRun> expand(const SweepSpec& spec) {
  std::vector<SweepRun> runs;
  std::set<std::string> seen;
  std::vector<std::size_t> idx(spec.axes.size(), 0);
  for (;;) {
    SweepRun r;
    r.base = spec.base;
    for (const auto& [k, v] : spec.set) r.overrides.push_back(k + "=" + v);
    std::string strategy;
    for (std::size_t a = 0; a < spec.axes.size(); ++a)
      if (spec.axes[a].first == "strategy" || spec.axes[a].first == "strategy.name") strategy = spec.axes[a].second[idx[a]];
    for (const auto& [k, v] : spec.set)
      if (k == "strategy" || k == "strategy.name") strategy = v;
    std::vector<std::string> name_parts;
    for (std::size_t a = 0; a < spec.axes.size(); ++a) {
      const auto& [key, values] = spec.axes[a];
      const std::string& v = values[idx[a]];
      // k is DMT's replay share: meaningless for the other strategies.
      if (key == "strategy.k" && !strategy.empty() && strategy != "dmt") continue;
      r.values.push_back({key, v});
      if (key == "base") {  // the base config itself as an axis (e.g. one per model size)
        r.base = v;
        name_parts.push_back("base=" + sanitize(stem_of(v)));
        continue;
      }
      // "a,b,c" moves several keys together (e.g. every dataset's fraction).
      std::size_t start = 0;
      while (start <= key.size()) {
        std::size_t comma = key.find(',', start);
        std::string one = key.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!one.empty()) r.overrides.push_back(one + "=" + v);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
      name_parts.push_back(short_key(key.substr(0, key.find(','))) + (key.find(',') != std::string::npos ? "s" : "") + "=" + sanitize(v));
    }
    for (const auto& p : name_parts) r.name += (r.name.empty() ? "" : ".") + p;
    // Identity: the resolved config minus where it is written.
    config::RunConfig cfg = config::parse_run_config(config_text(r.base, r.overrides), r.base + " [" + r.name + "]");
    r.gpus = cfg.dist.gpus;
    nlohmann::json j = cfg.to_json();
    j.erase("output_dir");
    j.erase("run_name");
    j.erase("config_file");
    r.hash = sha256_hex(j.dump()).substr(0, 12);
    r.dir = fs::join(spec.runs_dir, r.hash);
    r.config_path = fs::join(r.dir, "config.yaml");
    if (seen.insert(r.hash).second) runs.push_back(std::move(r));
    // Next grid point (last axis fastest).
    std::size_t a = spec.axes.size();
    while (a > 0) {
      --a;
      if (++idx[a] < spec.axes[a].second.size()) break;
      idx[a] = 0;
      if (a == 0) return runs;
    }
    if (spec.axes.empty()) return runs;
  }
}

void materialise(const SweepSpec& spec, const std::vector<SweepRun>& runs) {
  fs::make_dirs(spec.output_dir);
  std::string index;
  for (const auto& r : runs) {
    fs::make_dirs(r.dir);
    std::vector<std::string> ov = r.overrides;
    ov.push_back("output_dir=" + r.dir);
    ov.push_back("run_name=" + spec.name + "." + r.name);
    std::string text = "# sweep " + spec.name + " (" + spec.file + "), run " + r.name + "\n" +
                       "# generated from " + r.base + " with:" + [&] {
                         std::string s;
                         for (const auto& o : r.overrides) s += " --set " + o;
                         return s;
                       }() + "\n" + config_text(r.base, ov);
    if (!fs::exists(r.config_path) || fs::read_file(r.config_path) != text) fs::write_file_atomic(r.config_path, text);
    nlohmann::ordered_json line = {{"name", r.name}, {"hash", r.hash}, {"dir", r.dir}, {"config", r.config_path}};
    nlohmann::ordered_json vals = nlohmann::ordered_json::object();
    for (const auto& [k, v] : r.values) vals[k] = v;
    line["values"] = vals;
    index += line.dump() + "\n";
  }
  fs::write_file_atomic(fs::join(spec.output_dir, "runs.jsonl"), index);
}

bool run_finished(const SweepRun& run) {
  return fs::exists(fs::join(run.dir, "final/model.safetensors")) && fs::exists(fs::join(run.dir, "eval/summary.json"));
}

namespace {

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

}  // namespace

LocalResult run_local(const SweepSpec& spec, const std::vector<SweepRun>& runs, const std::string& sft_binary, int jobs) {
  jobs = std::clamp(jobs, 1, kMaxChildren);
  // Concurrent runs split the cores between them (small models scale poorly past a few
  // threads, so two 1-thread runs beat one 2-thread run on 2 cores).
  const long cores = std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN));
  const std::string threads = std::to_string(std::max(1L, cores / jobs));
  struct Child {
    std::size_t index;
    std::chrono::steady_clock::time_point start;
  };
  std::map<pid_t, Child> running;
  LocalResult result;
  bool stopping = false;

  // No SA_RESTART: a signal interrupts waitpid, so the loop notices it at once.
  g_stop_signal = 0;
  struct sigaction sa {}, old_term {}, old_int {};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, &old_term);
  ::sigaction(SIGINT, &sa, &old_int);
  sigset_t stop_signals, unblocked;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);

  auto reap_one = [&] {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    if (pid <= 0 || !running.count(pid)) return;
    remember_child(pid, false);
    const Child c = running.at(pid);
    running.erase(pid);
    const auto& r = runs[c.index];
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - c.start).count();
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      sft::log::info("sweep {}: run {} done in {:.0f} s", spec.name, r.name, secs);
      return;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 75) {  // RunLockedError: another process took it first
      ++result.skipped;
      sft::log::warn("sweep {}: run {} skipped: another process holds {} (see {})", spec.name, r.name, r.dir,
                     fs::join(r.dir, "train.log"));
      return;
    }
    ++result.failed;
    sft::log::error("sweep {}: run {} failed (exit {}); see {}", spec.name, r.name,
                  WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), fs::join(r.dir, "train.log"));
    if (WIFSIGNALED(status) && (WTERMSIG(status) == SIGINT || WTERMSIG(status) == SIGTERM)) stopping = true;
    if (WIFEXITED(status) && (WEXITSTATUS(status) == 130 || WEXITSTATUS(status) == 143)) stopping = true;  // by a signal
  };
  for (std::size_t i = 0; i < runs.size() && !stopping && !g_stop_signal; ++i) {
    const auto& r = runs[i];
    if (run_finished(r)) {
      sft::log::info("sweep {}: run {}/{} {} already finished ({})", spec.name, i + 1, runs.size(), r.name, r.dir);
      continue;
    }
    while (static_cast<int>(running.size()) >= jobs && !g_stop_signal) reap_one();
    if (stopping || g_stop_signal) break;
    if (const std::string who = RunLock::holder(r.dir); !who.empty()) {
      ++result.skipped;
      sft::log::warn("sweep {}: run {}/{} {} skipped: {} is in use by {}", spec.name, i + 1, runs.size(), r.name, r.dir, who);
      continue;
    }
    const bool resume = fs::is_dir(fs::join(r.dir, "checkpoints"));
    sft::log::info("sweep {}: run {}/{} {} {}-> {}", spec.name, i + 1, runs.size(), r.name, resume ? "(resuming) " : "", r.dir);
    const std::string log = fs::join(r.dir, "train.log");
    std::vector<std::string> argv = {sft_binary, "train", "--config", r.config_path, "--resume", "auto"};
    if (jobs > 1) argv.insert(argv.end(), {"--set", "train.threads=" + threads});
    std::vector<char*> a;
    for (auto& x : argv) a.push_back(const_cast<char*>(x.c_str()));
    a.push_back(nullptr);
    const pid_t parent = ::getpid();
    // Blocked from fork until the child is on the list, so no signal can miss it.
    ::sigprocmask(SIG_BLOCK, &stop_signals, &unblocked);
    if (g_stop_signal) {  // it came while this run was being prepared: start nothing
      ::sigprocmask(SIG_SETMASK, &unblocked, nullptr);
      break;
    }
    pid_t pid = ::fork();
    if (pid == 0) {
      // Its own process group: a terminal's Ctrl-C reaches it once, through the sweep.
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // the sweep killed outright: checkpoint and exit
      if (::getppid() != parent) ::_exit(128 + SIGTERM);
      ::signal(SIGTERM, SIG_DFL);
      ::signal(SIGINT, SIG_DFL);
      ::sigprocmask(SIG_SETMASK, &unblocked, nullptr);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execv(a[0], a.data());
      ::_exit(127);
    }
    if (pid > 0) {
      running[pid] = {i, std::chrono::steady_clock::now()};
      remember_child(pid, true);
    }
    ::sigprocmask(SIG_SETMASK, &unblocked, nullptr);
    if (pid < 0) throw Error("sweep " + spec.name + ": cannot start a run (fork failed)");
  }
  if (g_stop_signal && !running.empty())
    sft::log::warn("sweep {}: signal {}: waiting for {} run(s) to save a checkpoint and exit", spec.name,
                   static_cast<int>(g_stop_signal), running.size());
  while (!running.empty()) reap_one();
  ::sigaction(SIGTERM, &old_term, nullptr);
  ::sigaction(SIGINT, &old_int, nullptr);
  result.signal = g_stop_signal;
  return result;
}

std::string emit_slurm(const SweepSpec& spec, const std::vector<SweepRun>& runs, const std::string& sft_binary) {
  // Each task is sized from its run's dist.gpus (the paper: 8 A100s for 7B/13B, 16 for 33B):
  // one rank per GPU, whole nodes of 8 beyond that. Runs of different sizes go to separate
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
        "# Slurm array for sweep " + spec.name + " (" + spec.file + "): one task per run, " +
        std::to_string(group.size()) + " runs of " + std::to_string(gpus) + " GPUs.\n"
        "# Submit from the repository root: sbatch " + script + "\n"
        "# Each task trains (resuming when requeued) and evaluates one run; then: sft sweep report --config " +
        spec.file + "\n"
        "#SBATCH --job-name=sft-" + spec.name + suffix + "\n"
        "#SBATCH --array=0-" + std::to_string(group.size() - 1) + "\n"
        "#SBATCH --nodes=" + std::to_string(nodes) + "\n#SBATCH --ntasks-per-node=" + std::to_string(per_node) +
        "\n#SBATCH --gpus-per-node=" + std::to_string(per_node) + "\n#SBATCH --cpus-per-task=12\n"
        "#SBATCH --time=48:00:00\n#SBATCH --signal=TERM@300\n#SBATCH --requeue\n"
        "#SBATCH --output=" + fs::join(spec.output_dir, "logs/%x-%A_%a.out") + "\n"
        "set -euo pipefail\n"
        "CONFIG=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" " + list_path + ")\n"
        "export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}\n"
        "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}\n"
        "srun --kill-on-bad-exit=1 " + sft_binary + " train --config \"$CONFIG\" --resume auto\n";
    fs::write_file_atomic(script, s);
    scripts += (scripts.empty() ? "" : "\n") + script;
  }
  return scripts;
}

nlohmann::ordered_json describe(const SweepSpec& spec, const std::vector<SweepRun>& runs) {
  nlohmann::ordered_json out = {{"sweep", spec.name}, {"file", spec.file}, {"base", spec.base}, {"runs", runs.size()}};
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  std::int64_t tokens = 0, steps = 0;
  for (const auto& r : runs) {
    config::RunConfig cfg = config::parse_run_config(config_text(r.base, r.overrides), r.base + " [" + r.name + "]");
    auto plan = train::dry_run(cfg, 1);
    std::int64_t run_tokens = 0;
    nlohmann::ordered_json stages = nlohmann::ordered_json::array();
    for (const auto& st : plan["stages"]) {
      std::int64_t t = st.contains("tokens") ? st["tokens"].get<std::int64_t>() : st["tokens_estimated"].get<std::int64_t>();
      run_tokens += t;
      stages.push_back({{"name", st["name"]}, {"samples", st["samples"]}, {"epochs", st["epochs"]}, {"tokens", t},
                        {"steps", st.contains("steps") ? st["steps"] : st["steps_estimated"]}});
    }
    tokens += run_tokens;
    steps += plan["total_steps"].get<std::int64_t>();
    nlohmann::ordered_json vals = nlohmann::ordered_json::object();
    for (const auto& [k, v] : r.values) vals[k] = v;
    list.push_back({{"name", r.name}, {"values", vals}, {"dir", r.dir}, {"finished", run_finished(r)}, {"stages", stages},
                    {"tokens", run_tokens}, {"steps", plan["total_steps"]}});
  }
  out["total_tokens"] = tokens;
  out["total_steps"] = steps;
  out["list"] = list;
  return out;
}

}  // namespace sft::sweep
