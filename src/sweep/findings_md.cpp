// findings.md: the plan's verdicts as a table, beside another study's where one is compared,
// and the descriptive tables (findings_internal.h).
#include "findings_internal.h"

namespace sft::sweep::findings_detail {
namespace {

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

// A row's effect cell: the effect, its interval and unit (a ratio to two places; points, the
// difference's unit, unnamed), and a log-linear row's fit checks.
std::string effect_md(const DecidedRow& row) {
  const ordered_json& r = row.json;
  const int digits = row.test == config::PlanTest::kSaturation ? 2 : 1;
  std::string eff = "-";
  if (r.contains("effect"))
    eff = num(r["effect"].get<double>(), digits) +
          (r.contains("ci95") ? " [" + num(r["ci95"][0].get<double>(), digits) + ", " +
                                    num(r["ci95"][1].get<double>(), digits) + "]"
                              : " [no interval]") +
          (row.test == config::PlanTest::kDifference ? "" : " " + std::string(unit_of(row.test)));
  if (r.contains("lack_of_fit"))
    eff += "; lack of fit F(" + plain(r["lack_of_fit"]["df"][0].get<double>(), 0) + ", " +
           plain(r["lack_of_fit"]["df"][1].get<double>(), 0) +
           ") p = " + plain(r["lack_of_fit"]["p"].get<double>(), 3) +
           "; AIC(line) - AIC(logistic) = " + plain(r["logistic"]["delta_aic"].get<double>(), 1);
  return eff;
}

// One row of the claims table; claim_cell is the claim's headline on its first row, else empty.
std::string row_md(const std::string& claim_cell, const std::string& claim_id, const DecidedRow& row,
                   const ordered_json& compare) {
  const ordered_json& r = row.json;
  const bool cmp = !compare.is_null();
  std::string n = r.contains("n") ? r["n"].dump() : "-";
  const std::string verdict =
      (row.exploratory ? "exploratory: " : "") + std::string(verdict_name(row.verdict));
  const std::string metric = r.value("metric", std::string(kScoreMetric));
  return "| " + claim_cell + " | " + r["id"].get<std::string>() + " | " + r["ability"].get<std::string>() +
         (metric == kScoreMetric ? "" : " (" + metric + ")") + " | " + r.value("compares", std::string("-")) +
         " | " + effect_md(row) + " | " + n + " | " + r.value("method", std::string("-")) + " | " +
         r.value("rule", std::string("-")) + " | " + r.value("paper", std::string("")) + " | " + verdict +
         " |" + (cmp ? " " + other_verdict(compare, claim_id, r["id"].get<std::string>()) + " |" : "") + "\n";
}

// The claims table: each claim's rows under its headline verdict, its exploratory rows after them.
std::string claims_md(const std::vector<DecidedClaim>& claims, const ordered_json& compare) {
  const bool cmp = !compare.is_null();
  std::string md =
      "| claim | row | ability | compares | effect [95% interval] | n | test | rule | paper | verdict |" +
      std::string(cmp ? " other seeds |" : "") + "\n|---|---|---|---|---|---|---|---|---|---|" +
      (cmp ? "---|" : "") + "\n";
  for (const auto& c : claims) {
    const std::string head = "**" + c.claim + "**: " + (c.exploratory ? "exploratory: " : "") +
                             verdict_name(c.verdict) +
                             (cmp ? " (other seeds: " + other_verdict(compare, c.id, "") + ")" : "");
    bool first = true;
    for (const auto& r : c.rows) {
      md += row_md(first ? head : "", c.id, r, compare);
      first = false;
    }
    for (const auto& r : c.exploratory_rows) md += row_md("", c.id, r, compare);
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

}  // namespace

std::string findings_md(const std::string& header, std::size_t finished_runs,
                        const std::vector<DecidedClaim>& claims, const ordered_json& out,
                        const ordered_json& compare) {
  return "# Findings\n\n" + header + "\n\nPaper: " + std::string(kPaper) + "; a figure marked " +
         "\"not verified\" was not found in a stored copy of that version. " + std::to_string(finished_runs) +
         " finished runs. Effects in percentage points with 95% intervals; n is the runs on each side " +
         "(paired: the pairs). A claim's verdict is its confirmatory rows' together: reproduced if every " +
         "row is, not reproduced if any row is, else undecided.\n\n" + claims_md(claims, compare) +
         dmt_by_k_md(out["dmt_by_k"]) + mixing_by_share_md(out["mixing_by_share"]);
}

}  // namespace sft::sweep::findings_detail
