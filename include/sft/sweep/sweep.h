// Sweeps: one file describing a study (a base run config, overrides for every run, and axes
// expanded as a grid), its runs, and their execution.
//
//   name: rq1_math
//   base: configs/repro/base.yaml          # a run config
//   set: {strategy: multi_task}            # overrides for every run (key.path: value)
//   axes:                                  # the grid, in this order
//     datasets.math.fraction: [1, 1/4, 1/16, 1/64, 1/256]
//     seed: [1, 2, 3]
//     datasets.math.fraction,datasets.code.fraction: [1, 1/4]   # keys joined by "," move together
//   output_dir: runs/repro/rq1_math        # report files; runs go to runs_dir
//   runs_dir: runs/repro/_runs             # optional: shared by sweeps, so identical runs train once
//
// `base` may itself be an axis (base: [configs/paper/llama_7b.yaml, ...]): one grid per base
// config, e.g. Table 1's four strategies for each model size in one sweep.
//
// Each run is identified by a hash of its fully resolved configuration, so two sweeps that
// contain the same run (RQ2's full-data mix is RQ4's multi-task run) train it once. A
// `strategy.k` value only applies to runs whose strategy is dmt; runs that end up
// identical are listed once. Running locally skips finished runs (final model, and eval
// summary when the run evaluates) and resumes interrupted ones (their newest good checkpoint).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace sft::sweep {

struct SweepSpec {
  std::string file;
  std::string name;
  std::string base;                                      // base run config
  std::vector<std::pair<std::string, std::string>> set;  // key.path -> value
  std::vector<std::pair<std::string, std::vector<std::string>>> axes;
  std::string output_dir;
  std::string runs_dir;
};

struct SweepRun {
  std::string name;                                         // "fraction=1_4.seed=2"
  std::vector<std::pair<std::string, std::string>> values;  // axis -> value
  std::vector<std::string> overrides;                       // applied to the base config
  std::string base;                                         // its base config (a `base` axis varies it)
  int gpus = 0;                                             // its dist.gpus (sizes its Slurm task)
  std::string hash;                                         // of the resolved config
  std::string dir;                                          // runs_dir/<hash>
  std::string config_path;                                  // dir/config.yaml
};

// Throws ConfigError (file:line: key: ...) for a malformed sweep file.
SweepSpec load_sweep(const std::string& path, const std::vector<std::string>& overrides = {});
std::vector<SweepRun> expand(const SweepSpec& spec);

// Writes each run's config.yaml and the sweep's runs.jsonl (name, values, dir).
void materialise(const SweepSpec& spec, const std::vector<SweepRun>& runs);

// Its final model is written and, when the run evaluates, its eval summary too.
bool run_finished(const SweepRun& run);

// Runs every unfinished run with `sft train` (a subprocess per run, log in <run>/train.log),
// `jobs` at a time, each with cores/jobs threads when jobs > 1.
//
// A run whose folder another process holds (its sft.lock: another sweep sharing runs_dir,
// or an `sft train` of its own) is skipped and said so, never trained twice at once.
// SIGTERM / SIGINT to the sweep go to its running children, which checkpoint and exit; the
// sweep then starts nothing more and returns with `signal` set (the CLI exits 128 + it).
// The children run in their own process group and get SIGTERM if the sweep dies outright.
struct LocalResult {
  int failed = 0;   // runs that ended with an error
  int skipped = 0;  // runs held by another process
  int signal = 0;   // the signal that stopped the sweep, 0 if none
};
LocalResult run_local(const SweepSpec& spec, const std::vector<SweepRun>& runs, const std::string& sft_binary,
                      int jobs = 1);

// Writes output_dir/sweep.sbatch: a Slurm array, one task per run, sized by dist.gpus (runs
// needing different GPU counts: one sweep-<N>gpu.sbatch each). Returns the paths, one per line.
std::string emit_slurm(const SweepSpec& spec, const std::vector<SweepRun>& runs,
                       const std::string& sft_binary);

// One entry per run for --dry-run: overrides, stage plan, tokens and steps.
nlohmann::ordered_json describe(const SweepSpec& spec, const std::vector<SweepRun>& runs);

}  // namespace sft::sweep
