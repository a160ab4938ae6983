#include "sft/sweep/findings.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "run_results.h"
#include "sft/sweep/report.h"
#include "sft/util/fs.h"

namespace sft::sweep {
namespace {

using nlohmann::ordered_json;
using BySeed = std::map<long long, double>;  // seed -> score in [0, 1]
using Curve = std::map<double, BySeed>;      // training records -> scores
constexpr double kHeadlineK = 1.0 / 256;     // the paper's DMT setting

const char* const kReproduced = "reproduced";
const char* const kNotReproduced = "not reproduced";
const char* const kUndecided = "undecided";

struct Pool {
  std::vector<RunResult> runs;         // finished runs, each once
  std::map<std::string, double> full;  // ability -> the most records any run trained
  std::vector<std::string> abilities;
};

Pool pool_of(const std::vector<SweepRun>& runs) {
  Pool p;
  std::set<std::string> dirs, abilities;
  for (const auto& run : runs) {
    if (!dirs.insert(run.dir).second) continue;
    RunResult r = read_run(run);
    if (r.scores.empty() || r.amounts.empty()) continue;
    for (const auto& [a, n] : r.amounts) {
      p.full[a] = std::max(p.full[a], n);
      abilities.insert(a);
    }
    p.runs.push_back(std::move(r));
  }
  p.abilities.assign(abilities.begin(), abilities.end());
  return p;
}

bool all_abilities(const Pool& p, const RunResult& r) { return r.amounts.size() == p.abilities.size(); }

bool at_full_data(const Pool& p, const RunResult& r) {
  if (!all_abilities(p, r)) return false;
  for (const auto& [a, n] : r.amounts)
    if (n != p.full.at(a)) return false;
  return true;
}

// RQ4: a strategy's runs on all the data (dmt at the paper's k).
bool strategy_run(const Pool& p, const RunResult& r, const std::string& strategy) {
  return r.strategy == strategy && at_full_data(p, r) &&
         (strategy != "dmt" || std::abs(r.k - kHeadlineK) < 1e-12);
}

const RunResult* first_strategy_run(const Pool& p, const std::string& strategy) {
  for (const auto& r : p.runs)
    if (strategy_run(p, r, strategy)) return &r;
  return nullptr;
}

BySeed strategy_scores(const Pool& p, const std::string& strategy, const std::string& ability) {
  BySeed out;
  for (const auto& r : p.runs)
    if (strategy_run(p, r, strategy) && r.scores.count(ability)) out[r.seed] = r.scores.at(ability);
  return out;
}

// RQ1: the ability trained alone, in one stage.
Curve alone_curve(const Pool& p, const std::string& ability) {
  Curve c;
  for (const auto& r : p.runs)
    if (r.amounts.size() == 1 && r.amounts.count(ability) && r.stage_abilities.size() == 1 &&
        r.scores.count(ability))
      c[r.amounts.at(ability)][r.seed] = r.scores.at(ability);
  return c;
}

// RQ2: every ability in one multi-task stage, each at the same share of its data.
Curve mixed_curve(const Pool& p, const std::string& ability) {
  Curve c;
  for (const auto& r : p.runs) {
    if (r.strategy != "multi_task" || r.stage_abilities.size() != 1 || !all_abilities(p, r) ||
        !r.scores.count(ability))
      continue;
    const double share = r.amounts.at(ability) / p.full.at(ability);
    bool same = true;
    for (const auto& [a, n] : r.amounts) same = same && std::abs(n / p.full.at(a) - share) <= 0.01 * share;
    if (same) c[r.amounts.at(ability)][r.seed] = r.scores.at(ability);
  }
  return c;
}

BySeed at_full(const Curve& c, double full) {
  auto it = c.find(full);
  return it == c.end() ? BySeed{} : it->second;
}

// a - b in percentage points over the seeds both ran.
MeanInterval paired(const BySeed& a, const BySeed& b) {
  std::vector<double> d;
  for (const auto& [seed, x] : a)
    if (b.count(seed)) d.push_back(100 * (x - b.at(seed)));
  return mean_interval95(d);
}

// The claim says the effect is below (above) the threshold.
std::string below(const MeanInterval& m, double threshold) {
  if (m.n < 2) return kUndecided;
  return m.hi < threshold ? kReproduced : m.lo >= threshold ? kNotReproduced : kUndecided;
}
std::string above(const MeanInterval& m, double threshold) {
  if (m.n < 2) return kUndecided;
  return m.lo > threshold ? kReproduced : m.hi <= threshold ? kNotReproduced : kUndecided;
}

std::string num(double v, int digits = 1) {
  char b[32];
  std::snprintf(b, sizeof b, "%+.*f", digits, v);
  return b;
}

std::string share_text(double s) {
  if (s >= 0.999) return "1";
  char b[32];
  std::snprintf(b, sizeof b, "1/%.3g", 1 / s);
  return b;
}

ordered_json row(const std::string& ability, const std::string& compares, const MeanInterval& m,
                 const std::string& verdict, const std::string& paper, const std::string& unit = "points") {
  ordered_json j = {{"ability", ability}, {"compares", compares}, {"unit", unit}, {"seeds", m.n}};
  if (m.n > 0) {
    j["effect"] = m.mean;
    j["ci95"] = {m.lo, m.hi};
  }
  j["verdict"] = verdict;
  j["paper"] = paper;
  return j;
}

std::string claim_verdict(const ordered_json& rows) {
  std::set<std::string> v;
  for (const auto& r : rows) v.insert(r["verdict"].get<std::string>());
  if (v.empty()) return "no runs";
  return v.size() == 1 ? *v.begin() : "mixed (see each row)";
}

// The smallest share of an ability's data from which every larger share (on this seed)
// scores at least kSaturationShare of the full-data score; NaN where full data scores 0.
std::vector<double> saturation_shares(const Curve& c, double full) {
  std::vector<double> out;
  const BySeed top = at_full(c, full);
  for (const auto& [seed, s_full] : top) {
    if (s_full <= 0) continue;
    double share = 1;
    for (auto it = c.rbegin(); it != c.rend(); ++it) {
      auto s = it->second.find(seed);
      if (s == it->second.end()) continue;
      if (s->second < kSaturationShare * s_full) break;
      share = it->first / full;
    }
    out.push_back(share);
  }
  return out;
}

}  // namespace

ordered_json build_findings(const std::vector<SweepRun>& runs, const std::string& out_dir) {
  const Pool p = pool_of(runs);
  ordered_json claims = ordered_json::array();
  auto add = [&](const std::string& id, const std::string& text, ordered_json rows) {
    const std::string verdict = claim_verdict(rows);
    claims.push_back({{"id", id}, {"claim", text}, {"verdict", verdict}, {"rows", std::move(rows)}});
  };

  // Which abilities are specialised and which general comes from what DMT and sequential trained:
  // DMT's first stage holds the specialised ones, the last stage of either the general one.
  const RunResult* dmt = first_strategy_run(p, "dmt");
  const RunResult* seq = first_strategy_run(p, "sequential");
  std::vector<std::string> specialised, general, earlier;
  if (dmt && dmt->stage_abilities.size() == 2)
    for (const auto& a : p.abilities) (dmt->stage_abilities[0].count(a) ? specialised : general).push_back(a);
  if (seq && !seq->stage_abilities.empty())
    for (const auto& a : p.abilities)
      if (!seq->stage_abilities.back().count(a)) earlier.push_back(a);
  auto paper = [](const std::string& a, const char* math, const char* code, const char* gen) {
    return std::string(a == "math" ? math : a == "code" ? code : gen);
  };

  // 1. Sequential training forgets the abilities trained before its last stage.
  ordered_json forgets = ordered_json::array();
  for (const auto& a : earlier) {
    const MeanInterval m =
        paired(strategy_scores(p, "sequential", a), at_full(alone_curve(p, a), p.full.at(a)));
    if (m.n)
      forgets.push_back(row(a, "sequential - " + a + " alone, full data", m, below(m, 0),
                            paper(a, "GSM8K 47.27 vs 57.9 (-10.6)", "HumanEval 24.80 vs 26.82 (-2.0)", "")));
  }
  add("sequential_forgets", "sequential training forgets the earlier abilities", std::move(forgets));

  // 2. DMT (k = 1/256) keeps math and code near multi-task, and general at least as sequential does.
  ordered_json keeps = ordered_json::array();
  for (const auto& a : specialised) {
    const MeanInterval m = paired(strategy_scores(p, "dmt", a), strategy_scores(p, "multi_task", a));
    if (m.n)
      keeps.push_back(row(a, "dmt - multi_task", m, above(m, -kNearMargin),
                          paper(a, "GSM8K 56.36 vs 56.69 (-0.3)", "HumanEval 25.00 vs 18.9 (+6.1)", "")));
  }
  for (const auto& a : general) {
    const MeanInterval m = paired(strategy_scores(p, "dmt", a), strategy_scores(p, "sequential", a));
    if (m.n)
      keeps.push_back(row(a, "dmt - sequential", m, above(m, -kNearMargin), "MT-Bench 6.69 vs 6.73 (-0.04)"));
  }
  add("dmt_keeps_both",
      "DMT (k = 1/256) keeps math and code near multi-task and general at least as well as sequential",
      std::move(keeps));

  // 3. Multi-task training hurts general ability, against general alone and against DMT.
  ordered_json hurts = ordered_json::array();
  for (const auto& a : general) {
    const BySeed mt = strategy_scores(p, "multi_task", a);
    const MeanInterval alone = paired(mt, at_full(alone_curve(p, a), p.full.at(a)));
    if (alone.n)
      hurts.push_back(row(a, "multi_task - " + a + " alone, full data", alone, below(alone, 0),
                          "MT-Bench 6.07 vs 6.63 (-0.56)"));
    const MeanInterval vs_dmt = paired(mt, strategy_scores(p, "dmt", a));
    if (vs_dmt.n)
      hurts.push_back(row(a, "multi_task - dmt", vs_dmt, below(vs_dmt, 0), "MT-Bench 6.07 vs 6.69 (-0.62)"));
  }
  add("multi_task_hurts_general",
      "multi-task training hurts general ability relative to general alone or DMT", std::move(hurts));

  // 4. Math and code improve log-linearly with their data; general saturates early.
  ordered_json scaling = ordered_json::array(), fits = ordered_json::object();
  std::map<std::string, MeanInterval> saturation;  // log2 of the share, over seeds
  for (const auto& a : p.abilities) {
    const Curve c = alone_curve(p, a);
    if (c.size() < 3) continue;
    std::vector<double> x, y;
    for (const auto& [n, by_seed] : c)
      for (const auto& [seed, s] : by_seed) {
        x.push_back(n);
        y.push_back(s);
      }
    const LogFit f = fit_log(x, y);
    const double per_doubling = 100 * std::log(2.0);  // points per doubling of the data
    fits[a] = {{"a", f.a},
               {"b", f.b},
               {"b_ci95", {f.b_lo, f.b_hi}},
               {"r2", std::isnan(f.r2) ? ordered_json() : ordered_json(f.r2)},
               {"n", f.n},
               {"points_per_doubling", f.b * per_doubling}};
    std::vector<double> logs;
    for (double s : saturation_shares(c, p.full.at(a))) logs.push_back(std::log2(s));
    saturation[a] = mean_interval95(logs);
    if (std::find(specialised.begin(), specialised.end(), a) == specialised.end()) continue;
    MeanInterval slope{f.b * per_doubling, 0, f.b_lo * per_doubling, f.b_hi * per_doubling, f.n};
    std::string verdict = slope.n < 3                            ? kUndecided
                          : slope.hi <= 0                        ? kNotReproduced
                          : slope.lo > 0 && f.r2 >= kLogLinearR2 ? kReproduced
                                                                 : kUndecided;
    ordered_json r = row(
        a,
        "slope of score on log2(records), alone; R^2 " + (std::isnan(f.r2) ? "n/a" : num(f.r2, 2).substr(1)),
        slope, verdict, paper(a, "GSM8K rises log-linearly", "HumanEval log-linear (33B)", ""),
        "points per doubling");
    r["r2"] = fits[a]["r2"];
    scaling.push_back(r);
  }
  for (const auto& g : general) {
    if (!saturation.count(g) || saturation[g].n == 0) continue;
    const MeanInterval& s = saturation[g];
    // Reproduced when general's share lies below every specialised ability's, not when it lies at or above
    // one.
    std::string verdict = s.n < 2 ? kUndecided : kReproduced;
    for (const auto& a : specialised) {
      if (!saturation.count(a) || saturation[a].n < 2)
        verdict = kUndecided;
      else if (s.lo >= saturation[a].hi)
        verdict = kNotReproduced;
      else if (verdict == kReproduced && !(s.hi < saturation[a].lo))
        verdict = kUndecided;
    }
    std::string others;
    for (const auto& a : specialised)
      if (saturation.count(a) && saturation[a].n)
        others += "; " + a + " " + share_text(std::exp2(saturation[a].mean)) + " [" +
                  share_text(std::exp2(saturation[a].lo)) + ", " + share_text(std::exp2(saturation[a].hi)) +
                  "]";
    ordered_json r = row(g,
                         "share of its data reaching " + std::to_string(int(100 * kSaturationShare)) +
                             "% of the full-data score (log2)" + others,
                         s, verdict, "emerges with ~1k samples (1/256-1/64), slow after 1/64", "log2 share");
    r["share"] = {{"mean", std::exp2(s.mean)}, {"ci95", {std::exp2(s.lo), std::exp2(s.hi)}}};
    scaling.push_back(r);
  }
  add("scaling", "math and code improve log-linearly with data; general saturates early", std::move(scaling));

  // 5. Mixing helps at low data and hurts at high data: RQ2 against RQ1 at each share.
  ordered_json mixing = ordered_json::array(), by_share = ordered_json::array();
  for (const auto& a : p.abilities) {
    const Curve alone = alone_curve(p, a), mixed = mixed_curve(p, a);
    std::vector<std::pair<double, MeanInterval>> effects;
    for (const auto& [n, scores] : mixed)
      if (alone.count(n)) {
        const MeanInterval m = paired(scores, alone.at(n));
        if (!m.n) continue;
        effects.emplace_back(n, m);
        by_share.push_back({{"ability", a},
                            {"records", n},
                            {"share", n / p.full.at(a)},
                            {"effect", m.mean},
                            {"ci95", {m.lo, m.hi}},
                            {"seeds", m.n}});
      }
    // Low data: the smallest share at which the two differ on some seed. Below it neither
    // side learned anything from its data (every score equal), so there is nothing to help.
    std::size_t first = 0;
    while (first + 1 < effects.size() && effects[first].second.mean == 0 && effects[first].second.sd == 0)
      ++first;
    if (effects.size() - first < 2) continue;
    const MeanInterval& low = effects[first].second;
    const MeanInterval& high = effects.back().second;
    const std::string lv = above(low, 0), hv = below(high, 0);
    const std::string verdict = lv == kReproduced && hv == kReproduced         ? kReproduced
                                : lv == kNotReproduced || hv == kNotReproduced ? kNotReproduced
                                                                               : kUndecided;
    ordered_json r = row(a,
                         "mixed - alone at " + share_text(effects[first].first / p.full.at(a)) +
                             " of the data (then at " + share_text(effects.back().first / p.full.at(a)) +
                             ": " + num(high.mean) + " [" + num(high.lo) + ", " + num(high.hi) + "])",
                         low, verdict, "gains at 1/256, losses at full data; turning point 1/64-1/16");
    r["low_verdict"] = lv;  // each half judged alone, for the figure
    r["at_full"] = {{"effect", high.mean}, {"ci95", {high.lo, high.hi}}, {"seeds", high.n}, {"verdict", hv}};
    mixing.push_back(r);
  }
  add("mixing_low_high", "mixing helps at low data and hurts at high data (RQ2 against RQ1)",
      std::move(mixing));

  ordered_json out = {{"thresholds",
                       {{"near_margin_points", kNearMargin},
                        {"log_linear_r2", kLogLinearR2},
                        {"saturation_share", kSaturationShare},
                        {"dmt_k", kHeadlineK}}},
                      {"finished_runs", p.runs.size()},
                      {"claims", claims},
                      {"fits", fits},
                      {"mixing_by_share", by_share}};

  std::string md =
      "Findings from " + std::to_string(p.runs.size()) +
      " finished runs: each effect in percentage points (mixed - alone, etc.), mean over the seeds both "
      "sides "
      "ran, with its 95% interval (Student's t). Paper: LLaMA-33B, Dong et al. 2024 (v1, Table 1 and "
      "sections 3-4). \"Near\" and \"at least as well\" allow " +
      num(kNearMargin).substr(1) +
      " points.\n\n| claim | ability | compares | effect [95% interval] | seeds | paper | verdict "
      "|\n|---|---|---|---|---|---|---|\n";
  for (const auto& c : claims) {
    if (c["rows"].empty()) md += "| " + c["claim"].get<std::string>() + " | | | | | | no runs |\n";
    bool first = true;  // the claim is named on its first row only
    for (const auto& r : c["rows"]) {
      std::string eff = "-";
      if (r.contains("effect")) {
        const bool share = r["unit"] == "log2 share";
        eff = share ? share_text(r["share"]["mean"].get<double>()) + " [" +
                          share_text(r["share"]["ci95"][0].get<double>()) + ", " +
                          share_text(r["share"]["ci95"][1].get<double>()) + "] of the data"
                    : num(r["effect"].get<double>()) + " [" + num(r["ci95"][0].get<double>()) + ", " +
                          num(r["ci95"][1].get<double>()) + "]" +
                          (r["unit"] == "points" ? "" : " " + r["unit"].get<std::string>());
      }
      md += "| " + (first ? c["claim"].get<std::string>() : std::string()) + " | " +
            r["ability"].get<std::string>() + " | " + r["compares"].get<std::string>() + " | " + eff + " | " +
            std::to_string(r["seeds"].get<int>()) + " | " + r["paper"].get<std::string>() + " | " +
            r["verdict"].get<std::string>() + " |\n";
      first = false;
    }
  }
  if (!by_share.empty()) {
    md +=
        "\nMixed (RQ2) - alone (RQ1), points, by share of each ability's data:\n\n| ability | share | "
        "records | effect [95% "
        "interval] | seeds |\n|---|---|---|---|---|\n";
    for (const auto& r : by_share)
      md += "| " + r["ability"].get<std::string>() + " | " + share_text(r["share"].get<double>()) + " | " +
            num(r["records"].get<double>(), 0).substr(1) + " | " + num(r["effect"].get<double>()) + " [" +
            num(r["ci95"][0].get<double>()) + ", " + num(r["ci95"][1].get<double>()) + "] | " +
            std::to_string(r["seeds"].get<int>()) + " |\n";
  }
  fs::make_dirs(out_dir);
  fs::write_file_atomic(fs::join(out_dir, "findings.md"), md);
  fs::write_file_atomic(fs::join(out_dir, "findings.json"), out.dump(1) + "\n");
  return out;
}

}  // namespace sft::sweep
