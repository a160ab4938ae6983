// The parts of `sft sweep report`'s findings (sft/sweep/findings.h), shared by their files:
//   findings_pool.cpp    the finished runs pooled, their run sets, and numbers as text
//   findings_decide.cpp  a plan's rows and claims decided over the pool
//   paper_figures.cpp    the paper's figures the rows quote
//   findings_md.cpp      findings.md
//   findings.cpp         which plans decide (the recorded one, one given now), the descriptive
//                        tables, and findings.{json,md} written
// A decided row is its findings.json object with its test, verdict and analysis carried beside
// it, typed, so findings.md is written from those and never compares the JSON's strings.
// Internal to src/sweep.
#pragma once

#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plan.h"
#include "run_results.h"
#include "sft/config/choices.h"

namespace sft::sweep::findings_detail {

using nlohmann::ordered_json;
using BySeed = std::map<long long, double>;  // seed -> score in points

struct Pool {
  std::vector<RunResult> runs;         // finished runs, each once
  std::map<std::string, double> full;  // ability -> the most records any run trained
  std::set<std::string> abilities;
};

// The finished runs (an eval score and a data manifest), each folder once.
Pool pool_of(const std::vector<SweepRun>& runs);
// Every ability, each at the most records any run trained.
bool at_full_data(const Pool& p, const RunResult& r);
// The ability's metric on a run: its eval score (kScoreMetric) or a field of its eval summary; NaN if absent.
double value(const RunResult& r, const std::string& ability, const std::string& metric);
// The share of the ability's data a run trained, or -1 when the run is not of `set`'s kind.
double share_in_set(const Pool& p, const RunResult& r, config::RunSet set, const std::string& ability,
                    double k, const std::string& metric = kScoreMetric);
// Scores (points) by seed, for runs of `set` at `share` (a share matches within 1% or one record).
BySeed scores(const Pool& p, config::RunSet set, const std::string& ability, double share, double k,
              const std::string& metric = kScoreMetric);
// The shares of the ability's data that runs of `set` trained.
std::set<double> shares_of(const Pool& p, config::RunSet set, const std::string& ability, double k,
                           const std::string& metric = kScoreMetric);
std::vector<double> values(const BySeed& m);

// Numbers as the findings write them: signed ("+1.2"), plain ("0.05"), a share ("1/16"); n/a if not finite.
std::string num(double v, int digits = 1);
std::string plain(double v, int digits = 2);
std::string share_text(double s);
// {"effect": e, "ci95": [lo, hi]}, each where finite.
ordered_json interval_json(double effect, double lo, double hi);

// A row's verdict, and a claim's (its rows' together).
enum class Verdict { kReproduced, kNotReproduced, kUndecided, kNoRuns };
const char* verdict_name(Verdict v);  // as findings.json and findings.md write it

// A row's or a claim's "analysis", and findings.json's plan "status" (with kNoPlan).
// The paper the findings cite, in findings.json and findings.md.
inline constexpr const char* kPaper = "Dong et al., arXiv 2310.05492v4 (ACL 2024)";
inline constexpr const char* kConfirmatory = "confirmatory";
inline constexpr const char* kExploratory = "exploratory";
inline constexpr const char* kNoPlan = "none";

struct DecidedRow {
  ordered_json json;  // findings.json's row
  config::PlanTest test = config::PlanTest::kDifference;
  Verdict verdict = Verdict::kNoRuns;
  bool exploratory = false;
};

struct DecidedClaim {
  std::string id, claim;
  Verdict verdict = Verdict::kNoRuns;
  bool exploratory = false;
  std::vector<DecidedRow> rows;
  std::vector<DecidedRow> exploratory_rows;  // a later plan's rows of the same claim
};

// The unit a test's effect is in: points, points per doubling, or a ratio of scores.
const char* unit_of(config::PlanTest test);

// Every claim of the plan, each row decided over the pool.
std::vector<DecidedClaim> decide_claims(const Pool& p, const Plan& plan, bool exploratory);
// A later plan's claims: its rows beside the confirmatory ones of the same claim, or a claim of their own.
void add_exploratory_rows(std::vector<DecidedClaim>& claims, const std::vector<DecidedClaim>& exploratory);
// findings.json's "claims".
ordered_json claims_json(const std::vector<DecidedClaim>& claims);

// The paper's figures with these ids, as a table cell: "what value (source[, not verified]); ...".
std::string paper_text(const std::vector<std::string>& ids);

// findings.md: the header, the claims table and the descriptive tables of `out` (findings.json),
// with `compare` (another study's findings.json, or null) beside.
std::string findings_md(const std::string& header, std::size_t finished_runs,
                        const std::vector<DecidedClaim>& claims, const ordered_json& out,
                        const ordered_json& compare);

}  // namespace sft::sweep::findings_detail
