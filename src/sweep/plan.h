// The analysis plan (configs/repro/analysis_plan.yaml): the claims, and for each row the
// ability, the test, the runs compared, the share, the side and the threshold. Read and
// checked in full before anything is decided; ConfigError naming file and key otherwise.
// Internal to src/sweep (findings.cpp decides the rows).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sft::sweep {

struct PlanRow {
  std::string id, ability, test;   // test: difference, log_linear, saturation
  std::string metric = "score";    // the ability's eval summary field ("score", open_turn_accuracy, ...)
  std::string a, b;                // difference: run sets (alone, mixed, multi_task, sequential, ...)
  std::string against;             // saturation: the ability compared with
  std::string share = "1";         // "1", "smallest" or a fraction "1/16"
  double k = 1.0 / 256;            // dmt's replay share, where a or b is dmt
  std::string side = "above";      // above or below the threshold
  double threshold = 0;            // points
  std::vector<std::string> paper;  // ids of the paper's figures (findings.cpp's table)
};

struct PlanClaim {
  std::string id, claim, combine = "all";
  std::vector<PlanRow> rows;
};

struct Plan {
  std::string file, sha256, version, paper, metric;
  double alpha = 0.05, delta_aic = 2;
  int resamples = 2000;
  std::uint64_t bootstrap_seed = 29;
  std::vector<PlanClaim> claims;
};

// A share as text ("1", "1/16", "0.25") -> its value; "smallest" -> 0; NaN when not one.
double plan_share(const std::string& text);

Plan load_plan(const std::string& path);

}  // namespace sft::sweep
