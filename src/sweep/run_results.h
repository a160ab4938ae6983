// What a finished sweep run left behind, read back for `sft sweep report` and its findings:
// the final eval scores, the training records per ability, and the strategy, k and seed it
// ran with. Internal to src/sweep.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "sft/config/choices.h"
#include "sft/sweep/sweep.h"

namespace sft::sweep {

struct RunResult {
  const SweepRun* run = nullptr;
  std::map<std::string, double> scores;  // ability -> final eval score in [0, 1]; empty: not finished
  // ability -> every numeric field of its eval summary (general: open_turn_accuracy, ...)
  std::map<std::string, std::map<std::string, double>> metrics;
  std::map<std::string, double> amounts;  // ability -> distinct training records (data_manifest.json)
  std::vector<std::set<std::string>> stage_abilities;  // abilities trained in each stage, in order
  std::optional<config::Strategy> strategy;            // config.resolved.json's; unset: no config there
  double k = 0;                                        // dmt's replay share
  long long seed = 0;
};

// ConfigError when the run's config.resolved.json names a strategy sft does not know.
RunResult read_run(const SweepRun& run);

}  // namespace sft::sweep
