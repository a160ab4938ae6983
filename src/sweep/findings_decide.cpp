// A plan's rows decided over the pooled runs (difference, log-linear, saturation), and its
// claims from their rows (findings_internal.h).
#include <cmath>

#include "findings_internal.h"
#include "sft/sweep/stats.h"

namespace sft::sweep::findings_detail {
namespace {

using config::RunSet;
using config::Side;

Verdict side_verdict(double lo, double hi, Side side, double threshold, bool defined) {
  if (!defined) return Verdict::kUndecided;
  if (side == Side::kAbove)
    return lo > threshold    ? Verdict::kReproduced
           : hi <= threshold ? Verdict::kNotReproduced
                             : Verdict::kUndecided;
  return hi < threshold    ? Verdict::kReproduced
         : lo >= threshold ? Verdict::kNotReproduced
                           : Verdict::kUndecided;
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
Verdict decide_difference(const Pool& p, const PlanRow& row, ordered_json& j) {
  double share = row.share;
  const bool fractional_sets = !strategy_of(row.a) && !strategy_of(row.b);  // alone or mixed
  if (share == 0) {                                                         // smallest share both sides ran
    share = smallest_common_share(p, row);
    if (share == 0) return Verdict::kNoRuns;
  }
  const BySeed a = scores(p, row.a, row.ability, share, row.k, row.metric),
               b = scores(p, row.b, row.ability, share, row.k, row.metric);
  if (a.empty() || b.empty()) return Verdict::kNoRuns;
  // A seed names the same data subset only at a fractional share of one ability's data.
  const stats::Diff d = difference(a, b, fractional_sets && share < 0.999);
  j["compares"] =
      set_name(row, row.a) + " - " + set_name(row, row.b) + " at " + share_text(share) + " of the data";
  j["unit"] = unit_of(config::PlanTest::kDifference);
  j["share"] = share;
  j["method"] = d.method;
  j["n"] = {{"a", d.n_a}, {"b", d.n_b}};
  j.update(interval_json(d.effect, d.lo, d.hi));
  if (std::isfinite(d.df)) j["df"] = d.df;
  j["rule"] = config::name(row.side) + " " + num(row.threshold, 0);
  return side_verdict(d.lo, d.hi, row.side, row.threshold, d.defined());
}

// Reproduced: a rising slope, no lack of fit, and a line the logistic does not beat by AIC.
Verdict log_linear_verdict(const Plan& plan, const stats::LineFit& line, const stats::LackOfFit& lof,
                           const stats::SaturatingFit& sat) {
  if (!lof.defined || !std::isfinite(line.b_lo)) return Verdict::kUndecided;
  if (line.b_hi <= 0 || lof.p < plan.alpha || sat.delta_aic > plan.delta_aic) return Verdict::kNotReproduced;
  return line.b_lo > 0 ? Verdict::kReproduced : Verdict::kUndecided;
}

// The score's slope per doubling of an ability's records alone, with its fit checks.
Verdict decide_log_linear(const Pool& p, const Plan& plan, const PlanRow& row, ordered_json& j) {
  std::vector<double> x, y;
  for (const auto& r : p.runs)
    if (share_in_set(p, r, RunSet::kAlone, row.ability, 0, row.metric) > 0) {
      x.push_back(std::log2(r.amounts.at(row.ability)));
      y.push_back(100 * value(r, row.ability, row.metric));
    }
  if (x.empty()) return Verdict::kNoRuns;
  const stats::LineFit line = stats::fit_line(x, y);
  const stats::LackOfFit lof = stats::lack_of_fit(x, y);
  const stats::SaturatingFit sat = stats::fit_logistic(x, y);
  j["compares"] = row.metric + " on log2(records), " + row.ability + " alone, every share and seed";
  j["unit"] = unit_of(config::PlanTest::kLogLinear);
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
  return log_linear_verdict(plan, line, lof, sat);
}

// Mean score at a share over mean score at full data; NaN when the latter is not positive.
double saturation_ratio(const std::vector<double>& at, const std::vector<double>& full) {
  const double f = stats::mean(full);
  return f > 0 ? stats::mean(at) / f : NAN;
}

// The ability's ratio at the share - against's ratio at the share, bootstrapped over seeds.
Verdict decide_saturation(const Pool& p, const Plan& plan, const PlanRow& row, std::size_t row_index,
                          ordered_json& j) {
  const double share = row.share;
  const std::vector<std::vector<double>> groups = {
      values(scores(p, RunSet::kAlone, row.ability, share, 0, row.metric)),
      values(scores(p, RunSet::kAlone, row.ability, 1, 0, row.metric)),
      values(scores(p, RunSet::kAlone, row.against, share, 0)),
      values(scores(p, RunSet::kAlone, row.against, 1, 0))};
  for (const auto& g : groups)
    if (g.empty()) return Verdict::kNoRuns;
  const stats::Bootstrap b = stats::bootstrap95(
      groups, [&](const auto& g) { return saturation_ratio(g[0], g[1]) - saturation_ratio(g[2], g[3]); },
      plan.resamples, plan.bootstrap_seed + row_index);
  j["compares"] = row.ability + " - " + row.against + ": score at " + share_text(share) +
                  " / score at full data (alone), " + row.ability + " " +
                  plain(saturation_ratio(groups[0], groups[1])) + ", " + row.against + " " +
                  plain(saturation_ratio(groups[2], groups[3]));
  j["unit"] = unit_of(config::PlanTest::kSaturation);
  j["share"] = share;
  j["method"] = "percentile bootstrap over seeds, " + std::to_string(plan.resamples) + " resamples";
  j["n"] = {{"min_seeds", b.n}, {"undefined_resamples", b.undefined}};
  j.update(interval_json(b.estimate, b.lo, b.hi));
  j["rule"] = config::name(row.side) + " " + num(row.threshold, 0);
  return side_verdict(b.lo, b.hi, row.side, row.threshold,
                      b.n >= 2 && std::isfinite(b.lo) && std::isfinite(b.estimate));
}

// One row's test over the pool: its verdict, its figures into j.
Verdict decide_test(const Pool& p, const Plan& plan, const PlanRow& row, std::size_t row_index,
                    ordered_json& j) {
  using config::PlanTest;
  if (!p.abilities.count(row.ability) ||
      (row.test == PlanTest::kSaturation && !p.abilities.count(row.against)))
    return Verdict::kNoRuns;
  switch (row.test) {
    case PlanTest::kDifference: return decide_difference(p, row, j);
    case PlanTest::kLogLinear: return decide_log_linear(p, plan, row, j);
    case PlanTest::kSaturation: break;
  }
  return decide_saturation(p, plan, row, row_index, j);
}

// One plan row decided over the pool; findings.json's row ends with its verdict, analysis and paper.
DecidedRow decide(const Pool& p, const Plan& plan, const PlanRow& row, std::size_t row_index,
                  bool exploratory) {
  DecidedRow d;
  d.test = row.test;
  d.exploratory = exploratory;
  d.json = {
      {"id", row.id}, {"ability", row.ability}, {"metric", row.metric}, {"test", config::name(row.test)}};
  d.verdict = decide_test(p, plan, row, row_index, d.json);
  d.json["verdict"] = verdict_name(d.verdict);
  d.json["analysis"] = exploratory ? kExploratory : kConfirmatory;
  d.json["paper"] = paper_text(row.paper);
  return d;
}

// A claim's verdict: not reproduced if any row is, reproduced if every row is, else undecided
// (or no runs, when no row had any).
Verdict combine(const std::vector<DecidedRow>& rows) {
  std::set<Verdict> v;
  for (const auto& r : rows) v.insert(r.verdict);
  if (rows.empty() || v == std::set<Verdict>{Verdict::kNoRuns}) return Verdict::kNoRuns;
  if (v.count(Verdict::kNotReproduced)) return Verdict::kNotReproduced;
  if (v.size() == 1 && v.count(Verdict::kReproduced)) return Verdict::kReproduced;
  return Verdict::kUndecided;  // some row undecided or lacking its runs
}

ordered_json rows_json(const std::vector<DecidedRow>& rows) {
  ordered_json out = ordered_json::array();
  for (const auto& r : rows) out.push_back(r.json);
  return out;
}

}  // namespace

const char* verdict_name(Verdict v) {
  switch (v) {
    case Verdict::kReproduced: return "reproduced";
    case Verdict::kNotReproduced: return "not reproduced";
    case Verdict::kUndecided: return "undecided";
    case Verdict::kNoRuns: break;
  }
  return "no runs";
}

const char* unit_of(config::PlanTest test) {
  switch (test) {
    case config::PlanTest::kDifference: return "points";
    case config::PlanTest::kLogLinear: return "points per doubling";
    case config::PlanTest::kSaturation: break;
  }
  return "ratio";
}

std::vector<DecidedClaim> decide_claims(const Pool& p, const Plan& plan, bool exploratory) {
  std::vector<DecidedClaim> claims;
  std::size_t index = 0;
  for (const auto& c : plan.claims) {
    DecidedClaim claim;
    claim.id = c.id;
    claim.claim = c.claim;
    claim.exploratory = exploratory;
    for (const auto& r : c.rows) claim.rows.push_back(decide(p, plan, r, index++, exploratory));
    claim.verdict = combine(claim.rows);
    claims.push_back(std::move(claim));
  }
  return claims;
}

void add_exploratory_rows(std::vector<DecidedClaim>& claims, const std::vector<DecidedClaim>& exploratory) {
  for (const auto& c : exploratory) {
    bool placed = false;
    for (auto& conf : claims)
      if (conf.id == c.id) {
        conf.exploratory_rows = c.rows;
        placed = true;
      }
    if (!placed) claims.push_back(c);
  }
}

ordered_json claims_json(const std::vector<DecidedClaim>& claims) {
  ordered_json out = ordered_json::array();
  for (const auto& c : claims) {
    ordered_json j = {{"id", c.id},
                      {"claim", c.claim},
                      {"analysis", c.exploratory ? kExploratory : kConfirmatory},
                      {"verdict", verdict_name(c.verdict)},
                      {"rows", rows_json(c.rows)}};
    if (!c.exploratory_rows.empty()) j["exploratory_rows"] = rows_json(c.exploratory_rows);
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace sft::sweep::findings_detail
