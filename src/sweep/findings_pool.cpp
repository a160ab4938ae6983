// The finished runs pooled for the findings, the run sets a plan compares, and numbers as the
// findings write them (findings_internal.h).
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "findings_internal.h"

namespace sft::sweep::findings_detail {
namespace {

using config::RunSet;
using config::Strategy;

bool all_abilities(const Pool& p, const RunResult& r) { return r.amounts.size() == p.abilities.size(); }

bool near(double x, double y) { return std::abs(x - y) <= 1e-9 + 1e-6 * std::abs(y); }

}  // namespace

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

bool at_full_data(const Pool& p, const RunResult& r) {
  if (!all_abilities(p, r)) return false;
  for (const auto& [a, n] : r.amounts)
    if (n != p.full.at(a)) return false;
  return true;
}

double value(const RunResult& r, const std::string& ability, const std::string& metric) {
  if (metric == kScoreMetric) return r.scores.count(ability) ? r.scores.at(ability) : NAN;
  const auto it = r.metrics.find(ability);
  if (it == r.metrics.end() || !it->second.count(metric)) return NAN;
  return it->second.at(metric);
}

double share_in_set(const Pool& p, const RunResult& r, RunSet set, const std::string& ability, double k,
                    const std::string& metric) {
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

BySeed scores(const Pool& p, RunSet set, const std::string& ability, double share, double k,
              const std::string& metric) {
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
                           const std::string& metric) {
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

std::string num(double v, int digits) {
  if (!std::isfinite(v)) return "n/a";
  char b[32];
  std::snprintf(b, sizeof b, "%+.*f", digits, v);
  return b;
}
std::string plain(double v, int digits) {
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

ordered_json interval_json(double effect, double lo, double hi) {
  ordered_json j = ordered_json::object();
  if (std::isfinite(effect)) j["effect"] = effect;
  if (std::isfinite(lo) && std::isfinite(hi)) j["ci95"] = {lo, hi};
  return j;
}

}  // namespace sft::sweep::findings_detail
