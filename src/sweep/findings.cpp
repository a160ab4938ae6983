// The findings (sft/sweep/findings.h): which plan decides (the one recorded with the runs, a
// plan given now beside or instead of it), the descriptive tables, and findings.{json,md}
// written. The pool, the rows decided and findings.md are in the files findings_internal.h names.
#include "sft/sweep/findings.h"

#include <cmath>

#include "findings_internal.h"
#include "sft/sweep/stats.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"

namespace sft::sweep {
namespace {

using config::RunSet;
using config::Strategy;
using namespace findings_detail;

// The plan recorded with the runs: confirmatory when valid, else the reason it is not.
struct PlanStatus {
  bool confirmatory = false;
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
  s.confirmatory = true;
  return s;
}

// Descriptive: DMT at every k against multi-task and sequential (Welch), and the k curve.
ordered_json dmt_by_k(const Pool& p) {
  std::set<double> ks;
  for (const auto& r : p.runs)
    if (r.strategy == Strategy::kDmt && at_full_data(p, r)) ks.insert(r.k);
  ordered_json out = ordered_json::array();
  for (const auto& a : p.abilities) {
    std::vector<double> x, y;
    const std::vector<double> multi_task = values(scores(p, RunSet::kMultiTask, a, 1, 0));
    const std::vector<double> sequential = values(scores(p, RunSet::kSequential, a, 1, 0));
    for (double k : ks) {
      const BySeed d = scores(p, RunSet::kDmt, a, 1, k);
      const stats::Diff mt = stats::welch95(values(d), multi_task);
      const stats::Diff seq = stats::welch95(values(d), sequential);
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
  std::vector<DecidedClaim> claims;
  ordered_json plan;
  std::string header;
};

// Verdicts from the plan recorded with the runs (the copy at `copy`), and any other plan's beside them.
PlanVerdicts confirmatory_verdicts(const Pool& p, const PlanStatus& status, const std::string& copy,
                                   const FindingsOptions& options) {
  PlanVerdicts v;
  v.plan = {{"status", kConfirmatory}};
  const Plan plan = load_plan(copy);
  v.claims = decide_claims(p, plan, false);
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
  add_exploratory_rows(v.claims, decide_claims(p, now, true));
  return v;
}

// No valid recorded plan: the plan given now decides exploratory rows only, or there are no verdicts.
PlanVerdicts exploratory_verdicts(const Pool& p, const PlanStatus& status, const FindingsOptions& options) {
  PlanVerdicts v;
  v.plan = {{"status", kNoPlan}};
  v.plan["reason"] = status.reason;
  if (options.plan_file.empty()) {
    v.header = "No verdicts: " + status.reason + ", and no plan was given (--plan).";
    return v;
  }
  const Plan now = load_plan(options.plan_file);
  v.claims = decide_claims(p, now, true);
  v.plan["status"] = kExploratory;
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
  if (status.confirmatory) return confirmatory_verdicts(p, status, copy, options);
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

}  // namespace

ordered_json build_findings(const std::vector<SweepRun>& runs, const std::string& out_dir,
                            const FindingsOptions& options) {
  const Pool p = pool_of(runs);
  const PlanVerdicts verdicts = decide_by_plans(p, options);
  const ordered_json compare = read_compared(options.compare_dir);
  ordered_json out = {{"plan", verdicts.plan},
                      {"paper", kPaper},
                      {"thresholds", {{"near_margin_points", 5.0}}},
                      {"finished_runs", p.runs.size()},
                      {"claims", claims_json(verdicts.claims)},
                      {"dmt_by_k", dmt_by_k(p)}};
  out["mixing_by_share"] = mixing_by_share(p);
  if (!compare.is_null())
    out["compare"] = {{"dir", options.compare_dir}, {"plan", compare.value("plan", ordered_json())}};
  fs::make_dirs(out_dir);
  fs::write_file_atomic(fs::join(out_dir, "findings.md"),
                        findings_md(verdicts.header, p.runs.size(), verdicts.claims, out, compare));
  fs::write_file_atomic(fs::join(out_dir, "findings.json"), out.dump(1) + "\n");
  return out;
}

}  // namespace sft::sweep
