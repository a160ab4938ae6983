// The analysis plan (configs/repro/analysis_plan.yaml): the claims, and for each row the
// ability, the test, the runs compared, the share, the side and the threshold. Read and
// checked in full before anything is decided; ConfigError naming file and key otherwise.
// The closed choices (test, run sets, side, combine) are enums, their names in
// sft/config/choices.h; a metric is an open name (an eval summary field), kScoreMetric the
// eval score itself. Internal to src/sweep (findings_decide.cpp decides the rows).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sft/config/choices.h"

namespace sft::sweep {

// The metric that is each ability's eval score; any other is a field of its eval summary.
inline constexpr const char* kScoreMetric = "score";

struct PlanRow {
  std::string id, ability;
  config::PlanTest test = config::PlanTest::kDifference;
  std::string metric = kScoreMetric;  // the ability's eval summary field (score, open_turn_accuracy, ...)
  config::RunSet a = config::RunSet::kAlone, b = config::RunSet::kAlone;  // difference: the run sets
  std::string against;  // saturation: the ability compared with
  double share = 1;  // of the ability's data (1, smallest, 1/16 in the file); 0: the smallest both sides ran
  double k = 1.0 / 256;                      // dmt's replay share, where a or b is dmt
  config::Side side = config::Side::kAbove;  // of the threshold
  double threshold = 0;                      // points
  std::vector<std::string> paper;            // ids of the paper's figures (paper_figures.cpp's table)
};

struct PlanClaim {
  std::string id, claim;
  config::Combine combine = config::Combine::kAll;
  std::vector<PlanRow> rows;
};

struct Plan {
  std::string file, sha256, version, paper;
  std::string metric = kScoreMetric;  // the rows' default metric (only the score is allowed here)
  double alpha = 0.05, delta_aic = 2;
  int resamples = 2000;
  std::uint64_t bootstrap_seed = 29;
  std::vector<PlanClaim> claims;
};

Plan load_plan(const std::string& path);

// The strategy whose runs at full data make up `set`; nullopt for alone and mixed.
std::optional<config::Strategy> strategy_of(config::RunSet set);

}  // namespace sft::sweep
