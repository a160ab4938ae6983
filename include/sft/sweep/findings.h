// The paper's claims (Dong et al., arXiv 2310.05492v4 = ACL 2024), decided from finished sweep
// runs by the rules of an analysis plan fixed before the runs (configs/repro/analysis_plan.yaml:
// every claim's rows, tests, shares, sides and thresholds; the rules themselves are documented
// there). `sft sweep report` writes them as findings.{md,json}, from the runs of every sweep
// file it was given, pooled. A run's kind comes from what it trained:
//   alone      one ability, one stage (RQ1), at any amount of data
//   mixed      all abilities in one stage, each at the same share of its data (RQ2)
//   strategy   all abilities at full data: multi_task, sequential, mixed_sequential, dmt (RQ4)
//
// Confirmatory or exploratory. scripts/repro.sh copies the plan into the study folder and
// records its SHA-256 (analysis_plan.record.json) before the first run trains. Verdicts are
// confirmatory only when that record exists, the copy still has the recorded hash, and no run
// had finished before it was recorded; they then come from the recorded copy alone. A plan
// given now (FindingsOptions::plan_file) that differs from it adds rows labelled exploratory
// beside the confirmatory ones; with no valid record every row is exploratory, and
// findings.md says why. A claim's headline verdict is its confirmatory rows' together.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sft/sweep/sweep.h"

namespace sft::sweep {

struct FindingsOptions {
  std::string study_dir;    // holds analysis_plan.record.json and the plan copy it names
  std::string plan_file;    // a plan to judge by now (sft sweep report --plan); may be empty
  std::string compare_dir;  // another study's findings.json, its verdicts put beside these
};

inline constexpr const char* kPlanRecord = "analysis_plan.record.json";

// Decides every row the plans allow, writes <out_dir>/findings.md and findings.json, returns
// findings.json's content. Throws ConfigError for a plan that does not parse.
nlohmann::ordered_json build_findings(const std::vector<SweepRun>& runs, const std::string& out_dir,
                                      const FindingsOptions& options = {});

// The paper's figures the findings quote, each with its table (or section) and arXiv
// version, and whether it was checked against a stored copy of that version.
struct PaperFigure {
  const char* id;
  const char* what;
  const char* value;
  const char* source;
  bool verified;
};
const std::vector<PaperFigure>& paper_figures();

}  // namespace sft::sweep
