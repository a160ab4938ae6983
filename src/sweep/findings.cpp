#include "sft/sweep/findings.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "plan.h"
#include "run_results.h"
#include "sft/sweep/stats.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"

namespace sft::sweep {

// The paper's figures, pinned to one version: arXiv 2310.05492v4 (the ACL 2024 camera-ready).
// Table 1's numbers were carried over from the project's earlier notes (README, configs) and
// could not be read in a stored copy of any version this session: each is marked not verified.
// Where versions were said to differ (DMT's MT-Bench: 6.69 in v1, 6.73 later) the note says so.
// The qualitative figures were checked against v4's abstract.
const std::vector<PaperFigure>& paper_figures() {
  static const std::vector<PaperFigure> figures = {
      {"t1_seq_math", "LLaMA-33B sequential, GSM8K", "47.27", "Table 1, arXiv v4", false},
      {"t1_math_alone", "LLaMA-33B math data alone, GSM8K", "57.9", "Table 1, arXiv v4", false},
      {"t1_seq_code", "LLaMA-33B sequential, HumanEval", "24.80", "Table 1, arXiv v4", false},
      {"t1_code_alone", "LLaMA-33B code data alone, HumanEval", "26.82", "Table 1, arXiv v4", false},
      {"t1_dmt_math", "LLaMA-33B DMT (k = 1/256), GSM8K", "56.36", "Table 1, arXiv v4", false},
      {"t1_dmt_code", "LLaMA-33B DMT (k = 1/256), HumanEval", "25.00", "Table 1, arXiv v4", false},
      {"t1_mt_math", "LLaMA-33B multi-task, GSM8K", "56.69", "Table 1, arXiv v4", false},
      {"t1_mt_code", "LLaMA-33B multi-task, HumanEval", "18.9", "Table 1, arXiv v4", false},
      {"t1_dmt_general", "LLaMA-33B DMT (k = 1/256), MT-Bench", "6.73 (v1 was quoted with 6.69)",
       "Table 1, arXiv v4", false},
      {"t1_seq_general", "LLaMA-33B sequential, MT-Bench", "6.73 (as quoted from v1)", "Table 1, arXiv v4",
       false},
      {"t1_mt_general", "LLaMA-33B multi-task, MT-Bench", "6.07", "Table 1, arXiv v4", false},
      {"t1_general_alone", "LLaMA-33B general data alone, MT-Bench", "6.63", "Table 1, arXiv v4", false},
      {"f_rq1_math", "math improves consistently with more data (log-linear: the body's figure, not checked)",
       "-", "abstract and section 3.1, arXiv v4", true},
      {"f_rq1_code", "code improves consistently with more data (log-linear: the body's figure, not checked)",
       "-", "abstract and section 3.1, arXiv v4", true},
      {"f_rq1_general", "general ability plateaus after roughly a thousand samples", "-",
       "abstract, arXiv v4", true},
      {"f_rq2", "composition helps with limited data and conflicts with plentiful data", "-",
       "abstract, arXiv v4", true},
  };
  return figures;
}

namespace {

using config::RunSet;
using config::Side;
using config::Strategy;
using nlohmann::ordered_json;
using BySeed = std::map<long long, double>;  // seed -> score in points

const char* const kReproduced = "reproduced";
const char* const kNotReproduced = "not reproduced";
const char* const kUndecided = "undecided";

struct Pool {
  std::vector<RunResult> runs;         // finished runs, each once
  std::map<std::string, double> full;  // ability -> the most records any run trained
  std::set<std::string> abilities;
};

Pool pool_of(const std::vector<SweepRun>& runs) {
  Pool p;
  std::set<std::string> dirs;
  for (const auto& run : runs) {
    if (!dirs.insert(run.dir).second) continue;
    RunResult r = read_run(run);
    if (r.scores.empty() || r.amounts.empty()) continue;
    for (const auto& [a, n] : r.amounts) {
      p.full[a] = std::max(p.full[a], n);
      p.abilities.insert(a);
    }
    p.runs.push_back(std::move(r));
  }
  return p;
}

bool all_abilities(const Pool& p, const RunResult& r) { return r.amounts.size() == p.abilities.size(); }

bool at_full_data(const Pool& p, const RunResult& r) {
  if (!all_abilities(p, r)) return false;
  for (const auto& [a, n] : r.amounts)
    if (n != p.full.at(a)) return false;
  return true;
}

bool near(double x, double y) { return std::abs(x - y) <= 1e-9 + 1e-6 * std::abs(y); }

// The ability's metric on a run: "score" (its eval score) or a field of its eval summary; NaN if absent.
double value(const RunResult& r, const std::string& ability, const std::string& metric) {
  if (metric == kScoreMetric) return r.scores.count(ability) ? r.scores.at(ability) : NAN;
  const auto it = r.metrics.find(ability);
  if (it == r.metrics.end() || !it->second.count(metric)) return NAN;
  return it->second.at(metric);
}

// The share of the ability's data a run trained, or -1 when the run is not of `set`'s kind.
double share_in_set(const Pool& p, const RunResult& r, RunSet set, const std::string& ability, double k,
                    const std::string& metric = kScoreMetric) {
  if (std::isnan(value(r, ability, metric)) || !r.amounts.count(ability)) return -1;
  const double share = r.amounts.at(ability) / p.full.at(ability);
  if (set == RunSet::kAlone) return r.amounts.size() == 1 && r.stage_abilities.size() == 1 ? share : -1;
  if (set == RunSet::kMixed) {
    if (r.strategy != Strategy::kMultiTask || r.stage_abilities.size() != 1 || !all_abilities(p, r))
      return -1;
    for (const auto& [a, n] : r.amounts)
      if (std::abs(n / p.full.at(a) - share) > 0.01 * share) return -1;
    return share;
  }
  if (r.strategy != strategy_of(set) || !at_full_data(p, r)) return -1;
  if (set == RunSet::kDmt && !near(r.k, k)) return -1;
  return 1;
}

// Scores (points) by seed, for runs of `set` at `share` (a share matches within 1% or one record).
BySeed scores(const Pool& p, RunSet set, const std::string& ability, double share, double k,
              const std::string& metric = kScoreMetric) {
  BySeed out;
  for (const auto& r : p.runs) {
    const double s = share_in_set(p, r, set, ability, k, metric);
    if (s < 0) continue;
    if (std::abs(s - share) <= 0.01 * share + 1.0 / p.full.at(ability))
      out[r.seed] = 100 * value(r, ability, metric);
  }
  return out;
}

std::set<double> shares_of(const Pool& p, RunSet set, const std::string& ability, double k,
                           const std::string& metric = kScoreMetric) {
  std::set<double> out;
  for (const auto& r : p.runs) {
    const double s = share_in_set(p, r, set, ability, k, metric);
    if (s > 0) out.insert(r.amounts.at(ability) / p.full.at(ability));
  }
  return out;
}

std::vector<double> values(const BySeed& m) {
  std::vector<double> v;
  for (const auto& [seed, x] : m) v.push_back(x);
  return v;
}

std::string num(double v, int digits = 1) {
  if (!std::isfinite(v)) return "n/a";
  char b[32];
  std::snprintf(b, sizeof b, "%+.*f", digits, v);
  return b;
}
std::string plain(double v, int digits = 2) {
  if (!std::isfinite(v)) return "n/a";
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", digits, v);
  return b;
}

std::string share_text(double s) {
  if (s >= 0.999) return "1";
  char b[32];
  std::snprintf(b, sizeof b, "1/%.3g", 1 / s);
  return b;
}

std::string side_verdict(double lo, double hi, Side side, double threshold, bool defined) {
  if (!defined) return kUndecided;
  if (side == Side::kAbove)
    return lo > threshold ? kReproduced : hi <= threshold ? kNotReproduced : kUndecided;
  return hi < threshold ? kReproduced : lo >= threshold ? kNotReproduced : kUndecided;
}

std::string paper_text(const std::vector<std::string>& ids) {
  std::string out;
  for (const auto& id : ids)
    for (const auto& f : paper_figures())
      if (id == f.id)
        out += (out.empty() ? "" : "; ") + std::string(f.what) +
               (std::string(f.value) == "-" ? "" : " " + std::string(f.value)) + " (" + f.source +
               (f.verified ? "" : ", not verified") + ")";
  return out;
}

ordered_json interval_json(double effect, double lo, double hi) {
  ordered_json j = ordered_json::object();
  if (std::isfinite(effect)) j["effect"] = effect;
  if (std::isfinite(lo) && std::isfinite(hi)) j["ci95"] = {lo, hi};
  return j;
}

// The row with no runs to decide it by.
ordered_json no_runs(ordered_json j) {
  j["verdict"] = "no runs";
  return j;
}

// The smallest share both run sets ran (within 1%), or 0 when they share none.
double smallest_common_share(const Pool& p, const PlanRow& row) {
  const auto sa = shares_of(p, row.a, row.ability, row.k, row.metric),
             sb = shares_of(p, row.b, row.ability, row.k, row.metric);
  double share = 0;
  for (double s : sa)
    for (double t : sb)
      if (std::abs(s - t) <= 0.01 * s && (share == 0 || s < share)) share = s;
  return share;
}

// a - b: paired over the seeds both ran, or Welch's over all of them.
stats::Diff difference(const BySeed& a, const BySeed& b, bool pair) {
  if (!pair) return stats::welch95(values(a), values(b));
  std::vector<double> va, vb;
  for (const auto& [seed, x] : a)
    if (b.count(seed)) {
      va.push_back(x);
      vb.push_back(b.at(seed));
    }
  return stats::paired95(va, vb);
}

// A run set as findings.md names it.
std::string set_name(const PlanRow& row, RunSet set) {
  if (set == RunSet::kAlone) return row.ability + " alone";
  return set == RunSet::kDmt ? "dmt (k = " + share_text(row.k) + ")" : config::name(set);
}

// Run set a - run set b at one share, against the row's side and threshold.
ordered_json decide_difference(const Pool& p, const PlanRow& row, ordered_json j) {
  double share = row.share;
  const bool fractional_sets = !strategy_of(row.a) && !strategy_of(row.b);  // alone or mixed
  if (share == 0) {                                                         // smallest share both sides ran
    share = smallest_common_share(p, row);
    if (share == 0) return no_runs(std::move(j));
  }
  const BySeed a = scores(p, row.a, row.ability, share, row.k, row.metric),
               b = scores(p, row.b, row.ability, share, row.k, row.metric);
  if (a.empty() || b.empty()) return no_runs(std::move(j));
  // A seed names the same data subset only at a fractional share of one ability's data.
  const stats::Diff d = difference(a, b, fractional_sets && share < 0.999);
  j["compares"] =
      set_name(row, row.a) + " - " + set_name(row, row.b) + " at " + share_text(share) + " of the data";
  j["unit"] = "points";
  j["share"] = share;
  j["method"] = d.method;
  j["n"] = {{"a", d.n_a}, {"b", d.n_b}};
  j.update(interval_json(d.effect, d.lo, d.hi));
  if (std::isfinite(d.df)) j["df"] = d.df;
  j["rule"] = config::name(row.side) + " " + num(row.threshold, 0);
  j["verdict"] = side_verdict(d.lo, d.hi, row.side, row.threshold, d.defined());
  return j;
}

// Reproduced: a rising slope, no lack of fit, and a line the logistic does not beat by AIC.
std::string log_linear_verdict(const Plan& plan, const stats::LineFit& line, const stats::LackOfFit& lof,
                               const stats::SaturatingFit& sat) {
  if (!lof.defined || !std::isfinite(line.b_lo)) return kUndecided;
  if (line.b_hi <= 0 || lof.p < plan.alpha || sat.delta_aic > plan.delta_aic) return kNotReproduced;
  return line.b_lo > 0 ? kReproduced : kUndecided;
}

// The score's slope per doubling of an ability's records alone, with its fit checks.
ordered_json decide_log_linear(const Pool& p, const Plan& plan, const PlanRow& row, ordered_json j) {
  std::vector<double> x, y;
  for (const auto& r : p.runs)
    if (share_in_set(p, r, RunSet::kAlone, row.ability, 0, row.metric) > 0) {
      x.push_back(std::log2(r.amounts.at(row.ability)));
      y.push_back(100 * value(r, row.ability, row.metric));
    }
  if (x.empty()) return no_runs(std::move(j));
  const stats::LineFit line = stats::fit_line(x, y);
  const stats::LackOfFit lof = stats::lack_of_fit(x, y);
  const stats::SaturatingFit sat = stats::fit_logistic(x, y);
  j["compares"] = row.metric + " on log2(records), " + row.ability + " alone, every share and seed";
  j["unit"] = "points per doubling";
  j["method"] = "least squares; lack-of-fit F (seeds as replicates); logistic in log2(records) by AIC";
  j["n"] = {{"runs", line.n}, {"shares", lof.m}};
  j.update(interval_json(line.b, line.b_lo, line.b_hi));
  j["lack_of_fit"] = {{"F", std::isfinite(lof.f) ? ordered_json(lof.f) : ordered_json("inf")},
                      {"df", {lof.df_lack, lof.df_pure}},
                      {"p", lof.p},
                      {"defined", lof.defined}};
  j["logistic"] = {{"lo", sat.lo},
                   {"hi", sat.hi},
                   {"mid_log2", sat.mid},
                   {"scale", sat.scale},
                   {"aic_line", sat.aic_line},
                   {"aic_logistic", sat.aic_logistic},
                   {"delta_aic", sat.delta_aic}};
  j["rule"] = "slope > 0, lack-of-fit p >= " + plain(plan.alpha) +
              ", AIC(line) - AIC(logistic) <= " + plain(plan.delta_aic, 1);
  j["verdict"] = log_linear_verdict(plan, line, lof, sat);
  return j;
}

// Mean score at a share over mean score at full data; NaN when the latter is not positive.
double saturation_ratio(const std::vector<double>& at, const std::vector<double>& full) {
  const double f = stats::mean(full);
  return f > 0 ? stats::mean(at) / f : NAN;
}

// The ability's ratio at the share - against's ratio at the share, bootstrapped over seeds.
ordered_json decide_saturation(const Pool& p, const Plan& plan, const PlanRow& row, std::size_t row_index,
                               ordered_json j) {
  const double share = row.share;
  const std::vector<std::vector<double>> groups = {
      values(scores(p, RunSet::kAlone, row.ability, share, 0, row.metric)),
      values(scores(p, RunSet::kAlone, row.ability, 1, 0, row.metric)),
      values(scores(p, RunSet::kAlone, row.against, share, 0)),
      values(scores(p, RunSet::kAlone, row.against, 1, 0))};
  for (const auto& g : groups)
    if (g.empty()) return no_runs(std::move(j));
  const stats::Bootstrap b = stats::bootstrap95(
      groups, [&](const auto& g) { return saturation_ratio(g[0], g[1]) - saturation_ratio(g[2], g[3]); },
      plan.resamples, plan.bootstrap_seed + row_index);
  j["compares"] = row.ability + " - " + row.against + ": score at " + share_text(share) +
                  " / score at full data (alone), " + row.ability + " " +
                  plain(saturation_ratio(groups[0], groups[1])) + ", " + row.against + " " +
                  plain(saturation_ratio(groups[2], groups[3]));
  j["unit"] = "ratio";
  j["share"] = share;
  j["method"] = "percentile bootstrap over seeds, " + std::to_string(plan.resamples) + " resamples";
  j["n"] = {{"min_seeds", b.n}, {"undefined_resamples", b.undefined}};
  j.update(interval_json(b.estimate, b.lo, b.hi));
  j["rule"] = config::name(row.side) + " " + num(row.threshold, 0);
  j["verdict"] = side_verdict(b.lo, b.hi, row.side, row.threshold,
                              b.n >= 2 && std::isfinite(b.lo) && std::isfinite(b.estimate));
  return j;
}

// One plan row decided over the pool.
ordered_json decide(const Pool& p, const Plan& plan, const PlanRow& row, std::size_t row_index) {
  using config::PlanTest;
  ordered_json j = {
      {"id", row.id}, {"ability", row.ability}, {"metric", row.metric}, {"test", config::name(row.test)}};
  if (!p.abilities.count(row.ability) ||
      (row.test == PlanTest::kSaturation && !p.abilities.count(row.against)))
    return no_runs(std::move(j));
  switch (row.test) {
    case PlanTest::kDifference: return decide_difference(p, row, std::move(j));
    case PlanTest::kLogLinear: return decide_log_linear(p, plan, row, std::move(j));
    case PlanTest::kSaturation: break;
  }
  return decide_saturation(p, plan, row, row_index, std::move(j));
}

std::string combine(const ordered_json& rows) {
  std::set<std::string> v;
  for (const auto& r : rows) v.insert(r["verdict"].get<std::string>());
  if (rows.empty() || v == std::set<std::string>{"no runs"}) return "no runs";
  if (v.count(kNotReproduced)) return kNotReproduced;
  if (v.size() == 1 && v.count(kReproduced)) return kReproduced;
  return kUndecided;  // some row undecided or lacking its runs
}

struct PlanStatus {
  std::string status = "none";  // confirmatory, exploratory, none
  std::string reason;
  ordered_json record;
};

PlanStatus recorded_plan(const std::string& study_dir, std::string* copy_path, int finished_runs) {
  PlanStatus s;
  const std::string rec_path = fs::join(study_dir.empty() ? "." : study_dir, kPlanRecord);
  if (!fs::exists(rec_path)) {
    s.reason = "no analysis plan was recorded with these runs (" + rec_path + " is missing)";
    return s;
  }
  s.record = ordered_json::parse(fs::read_file(rec_path), nullptr, false);
  if (!s.record.is_object()) {
    s.reason = rec_path + " is not a JSON object";
    s.record = ordered_json::object();
    return s;
  }
  *copy_path = fs::join(study_dir, s.record.value("plan_file", std::string("analysis_plan.yaml")));
  const std::string want = s.record.value("sha256", std::string());
  if (!fs::exists(*copy_path) || sha256_file(*copy_path) != want) {
    s.reason = "the recorded plan " + *copy_path + " does not have the hash recorded in " + rec_path;
    copy_path->clear();
    return s;
  }
  const int before = s.record.value("finished_runs_before", -1);
  if (before != 0) {
    s.reason = "the plan was recorded after " +
               (before < 0 ? std::string("an unknown number of") : std::to_string(before)) +
               " runs had finished";
    copy_path->clear();
    return s;
  }
  (void)finished_runs;
  s.status = "confirmatory";
  return s;
}

ordered_json decide_claims(const Pool& p, const Plan& plan, const std::string& analysis) {
  ordered_json claims = ordered_json::array();
  std::size_t index = 0;
  for (const auto& c : plan.claims) {
    ordered_json rows = ordered_json::array();
    for (const auto& r : c.rows) {
      ordered_json j = decide(p, plan, r, index++);
      j["analysis"] = analysis;
      j["paper"] = paper_text(r.paper);
      rows.push_back(std::move(j));
    }
    const std::string verdict = combine(rows);
    claims.push_back(
        {{"id", c.id}, {"claim", c.claim}, {"analysis", analysis}, {"verdict", verdict}, {"rows", rows}});
  }
  return claims;
}

// Descriptive: DMT at every k against multi-task and sequential (Welch), and the k curve.
ordered_json dmt_by_k(const Pool& p) {
  std::set<double> ks;
  for (const auto& r : p.runs)
    if (r.strategy == Strategy::kDmt && at_full_data(p, r)) ks.insert(r.k);
  ordered_json out = ordered_json::array();
  for (const auto& a : p.abilities) {
    std::vector<double> x, y;
    for (double k : ks) {
      const BySeed d = scores(p, RunSet::kDmt, a, 1, k);
      const stats::Diff mt = stats::welch95(values(d), values(scores(p, RunSet::kMultiTask, a, 1, 0)));
      const stats::Diff seq = stats::welch95(values(d), values(scores(p, RunSet::kSequential, a, 1, 0)));
      ordered_json j = {{"ability", a}, {"k", k}, {"mean", stats::mean(values(d))}, {"n", d.size()}};
      ordered_json vs_mt = interval_json(mt.effect, mt.lo, mt.hi),
                   vs_seq = interval_json(seq.effect, seq.lo, seq.hi);
      vs_mt["n"] = {mt.n_a, mt.n_b};
      vs_seq["n"] = {seq.n_a, seq.n_b};
      j["minus_multi_task"] = vs_mt;
      j["minus_sequential"] = vs_seq;
      out.push_back(j);
      for (const auto& [seed, s] : d) {
        x.push_back(std::log2(k));
        y.push_back(s);
      }
    }
    if (ks.size() >= 2) {
      const stats::LineFit f = stats::fit_line(x, y);
      ordered_json j = {{"ability", a}, {"k_curve", true}, {"slope_per_doubling_k", f.b}, {"n", f.n}};
      j.update(interval_json(f.b, f.b_lo, f.b_hi));
      out.push_back(j);
    }
  }
  return out;
}

// The claims decided, findings.json's "plan" block and findings.md's opening sentences.
struct PlanVerdicts {
  ordered_json claims = ordered_json::array();
  ordered_json plan;
  std::string header;
};

// A later plan's claims: its rows beside the confirmatory ones of the same claim, or a claim of their own.
void add_exploratory_rows(ordered_json& claims, const ordered_json& exploratory) {
  for (const auto& c : exploratory) {
    bool placed = false;
    for (auto& conf : claims)
      if (conf["id"] == c["id"]) {
        conf["exploratory_rows"] = c["rows"];
        placed = true;
      }
    if (!placed) claims.push_back(c);
  }
}

// Verdicts from the plan recorded with the runs (the copy at `copy`), and any other plan's beside them.
PlanVerdicts confirmatory_verdicts(const Pool& p, const PlanStatus& status, const std::string& copy,
                                   const FindingsOptions& options) {
  PlanVerdicts v;
  v.plan = {{"status", status.status}};
  const Plan plan = load_plan(copy);
  v.claims = decide_claims(p, plan, "confirmatory");
  v.plan["sha256"] = plan.sha256;
  v.plan["file"] = copy;
  v.plan["recorded_utc"] = status.record.value("recorded_utc", std::string());
  v.header = "Confirmatory verdicts from the analysis plan recorded with the runs (" + copy + ", SHA-256 " +
             plan.sha256 + ", recorded " + v.plan["recorded_utc"].get<std::string>() + ").";
  if (options.plan_file.empty()) return v;
  const Plan now = load_plan(options.plan_file);
  if (now.sha256 == plan.sha256) return v;
  // A changed rule is shown beside the confirmatory row of its claim, never in its place.
  v.plan["exploratory_plan"] = {{"file", now.file}, {"sha256", now.sha256}};
  v.header += " Rows labelled exploratory come from another plan given afterwards (" + now.file +
              ", SHA-256 " + now.sha256 + ") and decide nothing.";
  add_exploratory_rows(v.claims, decide_claims(p, now, "exploratory"));
  return v;
}

// No valid recorded plan: the plan given now decides exploratory rows only, or there are no verdicts.
PlanVerdicts exploratory_verdicts(const Pool& p, const PlanStatus& status, const FindingsOptions& options) {
  PlanVerdicts v;
  v.plan = {{"status", status.status}};
  v.plan["reason"] = status.reason;
  if (options.plan_file.empty()) {
    v.header = "No verdicts: " + status.reason + ", and no plan was given (--plan).";
    return v;
  }
  const Plan now = load_plan(options.plan_file);
  v.claims = decide_claims(p, now, "exploratory");
  v.plan["status"] = "exploratory";
  v.plan["file"] = now.file;
  v.plan["sha256"] = now.sha256;
  v.header = "EXPLORATORY ONLY: " + status.reason + ". Every row below applies " + now.file + " (SHA-256 " +
             now.sha256 + ") after the fact and decides nothing.";
  return v;
}

// Confirmatory when the recorded plan is valid, else exploratory or nothing.
PlanVerdicts decide_by_plans(const Pool& p, const FindingsOptions& options) {
  std::string copy;
  const PlanStatus status = recorded_plan(options.study_dir, &copy, static_cast<int>(p.runs.size()));
  if (status.status == "confirmatory") return confirmatory_verdicts(p, status, copy, options);
  return exploratory_verdicts(p, status, options);
}

// A second seed set's findings.json (--compare), or null when none was given.
ordered_json read_compared(const std::string& compare_dir) {
  if (compare_dir.empty()) return ordered_json();
  const std::string other = fs::join(compare_dir, "findings.json");
  if (!fs::exists(other)) throw ConfigError("--compare: " + other + " not found");
  return ordered_json::parse(fs::read_file(other));
}

// Descriptive: mixed - alone at every share both ran (paired: a seed is one data subset).
ordered_json mixing_by_share(const Pool& p) {
  ordered_json by_share = ordered_json::array();
  for (const auto& a : p.abilities)
    for (double s : shares_of(p, RunSet::kMixed, a, 0)) {
      const BySeed m = scores(p, RunSet::kMixed, a, s, 0), al = scores(p, RunSet::kAlone, a, s, 0);
      std::vector<double> va, vb;
      for (const auto& [seed, x] : m)
        if (al.count(seed)) {
          va.push_back(x);
          vb.push_back(al.at(seed));
        }
      const stats::Diff d = s < 0.999 ? stats::paired95(va, vb) : stats::welch95(values(m), values(al));
      if (va.empty() && d.n_a == 0) continue;
      ordered_json j = {{"ability", a}, {"share", s}, {"method", d.method}};
      j.update(interval_json(d.effect, d.lo, d.hi));
      j["n"] = {d.n_a, d.n_b};
      if (j.contains("ci95")) by_share.push_back(j);
    }
  return by_share;
}

// The compared study's verdict of a row, or with no row_id of the claim; "-" when it has none.
std::string other_verdict(const ordered_json& compare, const std::string& claim_id,
                          const std::string& row_id) {
  if (compare.is_null()) return "";
  for (const auto& c : compare.value("claims", ordered_json::array()))
    if (c.value("id", "") == claim_id) {
      if (row_id.empty()) return c.value("analysis", "") + ": " + c.value("verdict", "");
      for (const auto& r : c.value("rows", ordered_json::array()))
        if (r.value("id", "") == row_id) return r.value("verdict", "");
    }
  return "-";
}

// A row's effect cell: the effect, its interval and unit, and a log-linear row's fit checks.
std::string effect_md(const ordered_json& r) {
  std::string eff = "-";
  if (r.contains("effect"))
    eff = num(r["effect"].get<double>(), r["unit"] == "ratio" ? 2 : 1) +
          (r.contains("ci95") ? " [" + num(r["ci95"][0].get<double>(), r["unit"] == "ratio" ? 2 : 1) + ", " +
                                    num(r["ci95"][1].get<double>(), r["unit"] == "ratio" ? 2 : 1) + "]"
                              : " [no interval]") +
          (r["unit"] == "points" ? "" : " " + r["unit"].get<std::string>());
  if (r.contains("lack_of_fit"))
    eff += "; lack of fit F(" + plain(r["lack_of_fit"]["df"][0].get<double>(), 0) + ", " +
           plain(r["lack_of_fit"]["df"][1].get<double>(), 0) +
           ") p = " + plain(r["lack_of_fit"]["p"].get<double>(), 3) +
           "; AIC(line) - AIC(logistic) = " + plain(r["logistic"]["delta_aic"].get<double>(), 1);
  return eff;
}

// One row of the claims table; claim_cell is the claim's headline on its first row, else empty.
std::string row_md(const std::string& claim_cell, const std::string& claim_id, const ordered_json& r,
                   const ordered_json& compare) {
  const bool cmp = !compare.is_null();
  std::string n = r.contains("n") ? r["n"].dump() : "-";
  const std::string verdict =
      (r["analysis"] == "exploratory" ? "exploratory: " : "") + r["verdict"].get<std::string>();
  const std::string metric = r.value("metric", std::string(kScoreMetric));
  return "| " + claim_cell + " | " + r["id"].get<std::string>() + " | " + r["ability"].get<std::string>() +
         (metric == kScoreMetric ? "" : " (" + metric + ")") + " | " + r.value("compares", std::string("-")) +
         " | " + effect_md(r) + " | " + n + " | " + r.value("method", std::string("-")) + " | " +
         r.value("rule", std::string("-")) + " | " + r.value("paper", std::string("")) + " | " + verdict +
         " |" + (cmp ? " " + other_verdict(compare, claim_id, r["id"].get<std::string>()) + " |" : "") + "\n";
}

// The claims table: each claim's rows under its headline verdict, its exploratory rows after them.
std::string claims_md(const ordered_json& claims, const ordered_json& compare) {
  const bool cmp = !compare.is_null();
  std::string md =
      "| claim | row | ability | compares | effect [95% interval] | n | test | rule | paper | verdict |" +
      std::string(cmp ? " other seeds |" : "") + "\n|---|---|---|---|---|---|---|---|---|---|" +
      (cmp ? "---|" : "") + "\n";
  for (const auto& c : claims) {
    const std::string id = c["id"].get<std::string>();
    const std::string head = "**" + c["claim"].get<std::string>() +
                             "**: " + (c["analysis"] == "exploratory" ? "exploratory: " : "") +
                             c["verdict"].get<std::string>() +
                             (cmp ? " (other seeds: " + other_verdict(compare, id, "") + ")" : "");
    bool first = true;
    for (const auto& r : c["rows"]) {
      md += row_md(first ? head : "", id, r, compare);
      first = false;
    }
    if (c.contains("exploratory_rows"))
      for (const auto& r : c["exploratory_rows"]) md += row_md("", id, r, compare);
  }
  if (claims.empty())
    md += "| (no plan: no claims decided) | | | | | | | | | |" + std::string(cmp ? " |" : "") + "\n";
  return md;
}

// The DMT table (each k against multi-task and sequential) and each ability's k curve.
std::string dmt_by_k_md(const ordered_json& dmt) {
  std::string md =
      "\nDescriptive (no verdicts). DMT at each k against multi-task and sequential, Welch, points:\n\n"
      "| ability | k | mean | n | dmt - multi_task [95%] | dmt - sequential [95%] "
      "|\n|---|---|---|---|---|---|\n";
  auto iv = [](const ordered_json& d) {
    return d.contains("ci95") ? num(d["effect"].get<double>()) + " [" + num(d["ci95"][0].get<double>()) +
                                    ", " + num(d["ci95"][1].get<double>()) + "] (n " + d["n"].dump() + ")"
                              : std::string("-");
  };
  for (const auto& r : dmt) {
    if (r.contains("k_curve")) continue;
    md += "| " + r["ability"].get<std::string>() + " | " + share_text(r["k"].get<double>()) + " | " +
          plain(r["mean"].get<double>(), 1) + " | " + std::to_string(r["n"].get<int>()) + " | " +
          iv(r["minus_multi_task"]) + " | " + iv(r["minus_sequential"]) + " |\n";
  }
  for (const auto& r : dmt)
    if (r.contains("k_curve") && r.contains("ci95"))
      md += "\nk curve, " + r["ability"].get<std::string>() + ": " + num(r["effect"].get<double>()) +
            " points per doubling of k [" + num(r["ci95"][0].get<double>()) + ", " +
            num(r["ci95"][1].get<double>()) + "] (n " + std::to_string(r["n"].get<int>()) + ")\n";
  return md;
}

// The mixed - alone table; empty when no share has both.
std::string mixing_by_share_md(const ordered_json& by_share) {
  if (by_share.empty()) return "";
  std::string md =
      "\nMixed (RQ2) - alone (RQ1) by share, points (paired where a seed is one data subset):\n\n"
      "| ability | share | effect [95% interval] | n | method |\n|---|---|---|---|---|\n";
  for (const auto& r : by_share)
    md += "| " + r["ability"].get<std::string>() + " | " + share_text(r["share"].get<double>()) + " | " +
          num(r["effect"].get<double>()) + " [" + num(r["ci95"][0].get<double>()) + ", " +
          num(r["ci95"][1].get<double>()) + "] | " + r["n"].dump() + " | " + r["method"].get<std::string>() +
          " |\n";
  return md;
}

// findings.md: the header, the claims table and the descriptive tables.
std::string findings_md(const std::string& header, std::size_t finished_runs, const ordered_json& out,
                        const ordered_json& compare) {
  return "# Findings\n\n" + header +
         "\n\nPaper: Dong et al., arXiv 2310.05492v4 (ACL 2024); a figure marked " +
         "\"not verified\" was not found in a stored copy of that version. " + std::to_string(finished_runs) +
         " finished runs. Effects in percentage points with 95% intervals; n is the runs on each side " +
         "(paired: the pairs). A claim's verdict is its confirmatory rows' together: reproduced if every " +
         "row is, not reproduced if any row is, else undecided.\n\n" + claims_md(out["claims"], compare) +
         dmt_by_k_md(out["dmt_by_k"]) + mixing_by_share_md(out["mixing_by_share"]);
}

}  // namespace

ordered_json build_findings(const std::vector<SweepRun>& runs, const std::string& out_dir,
                            const FindingsOptions& options) {
  const Pool p = pool_of(runs);
  const PlanVerdicts verdicts = decide_by_plans(p, options);
  const ordered_json compare = read_compared(options.compare_dir);
  ordered_json out = {{"plan", verdicts.plan},
                      {"paper", "Dong et al., arXiv 2310.05492v4 (ACL 2024)"},
                      {"thresholds", {{"near_margin_points", 5.0}}},
                      {"finished_runs", p.runs.size()},
                      {"claims", verdicts.claims},
                      {"dmt_by_k", dmt_by_k(p)}};
  out["mixing_by_share"] = mixing_by_share(p);
  if (!compare.is_null())
    out["compare"] = {{"dir", options.compare_dir}, {"plan", compare.value("plan", ordered_json())}};
  fs::make_dirs(out_dir);
  fs::write_file_atomic(fs::join(out_dir, "findings.md"),
                        findings_md(verdicts.header, p.runs.size(), out, compare));
  fs::write_file_atomic(fs::join(out_dir, "findings.json"), out.dump(1) + "\n");
  return out;
}

}  // namespace sft::sweep
