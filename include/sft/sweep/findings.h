// The paper's claims (Dong et al. 2024), each decided from finished sweep runs with a 95%
// interval over seeds. `sft sweep report` writes them as findings.{md,json} beside the
// reports, from the runs of every sweep file it was given, pooled: a claim needs runs of a
// kind, not a sweep of a name. A run's kind comes from what it trained:
//   alone      one ability, one stage (RQ1), at any amount of data
//   mixed      all abilities in one stage, each at the same share of its data (RQ2)
//   strategy   all abilities at full data: multi_task, sequential, mixed_sequential, dmt (RQ4)
//
// Effects are differences of scores in percentage points, paired by seed (the seeds both
// sides ran), with Student's t interval over the pairs. A verdict is
//   reproduced      the interval lies on the claimed side of the threshold
//   not reproduced  it lies on the other side
//   undecided       it straddles the threshold, or fewer than 2 seeds pair up
// The thresholds: 0 for "better"/"worse"; -kNearMargin for "near" and "at least as well"
// (non-inferiority); the log-linear fit's slope interval above 0 with R^2 >= kLogLinearR2;
// and saturation as the smallest share of the data from which every larger share scores at
// least kSaturationShare of the full-data score. Mixing's "low data" is the smallest share
// at which mixed and alone differ on some seed (below it neither learned anything).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sft/sweep/sweep.h"

namespace sft::sweep {

inline constexpr double kNearMargin = 5.0;  // percentage points
inline constexpr double kLogLinearR2 = 0.8;
inline constexpr double kSaturationShare = 0.9;

// Decides every claim the pooled runs allow (a claim without its runs is listed as lacking
// them), writes <out_dir>/findings.md and findings.json, returns findings.json's content.
nlohmann::ordered_json build_findings(const std::vector<SweepRun>& runs, const std::string& out_dir);

}  // namespace sft::sweep
