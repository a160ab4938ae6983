#include "sft/sweep/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <utility>
#include <set>

#include "run_results.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft::sweep {
namespace {

using nlohmann::ordered_json;

std::string fmt(double v, int digits = 3) {
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", digits, v);
  return b;
}

}  // namespace

LogFit fit_log(const std::vector<double>& amount, const std::vector<double>& score) {
  LogFit f;
  std::vector<double> x, y;
  for (std::size_t i = 0; i < amount.size(); ++i)
    if (amount[i] > 0) {
      x.push_back(std::log(amount[i]));
      y.push_back(score[i]);
    }
  f.n = static_cast<int>(x.size());
  if (f.n < 2) return f;
  double mx = 0, my = 0;
  for (int i = 0; i < f.n; ++i) {
    mx += x[static_cast<std::size_t>(i)];
    my += y[static_cast<std::size_t>(i)];
  }
  mx /= f.n;
  my /= f.n;
  double sxx = 0, sxy = 0, syy = 0;
  for (int i = 0; i < f.n; ++i) {
    double dx = x[static_cast<std::size_t>(i)] - mx, dy = y[static_cast<std::size_t>(i)] - my;
    sxx += dx * dx;
    sxy += dx * dy;
    syy += dy * dy;
  }
  if (sxx == 0) return f;
  f.b = sxy / sxx;
  f.a = my - f.b * mx;
  f.r2 = syy > 0 ? (sxy * sxy) / (sxx * syy) : NAN;  // constant scores: nothing to explain
  if (f.n >= 3) {
    const double residual = std::max(0.0, syy - f.b * sxy);
    const double half = t_critical_95(f.n - 2) * std::sqrt(residual / (f.n - 2) / sxx);
    f.b_lo = f.b - half;
    f.b_hi = f.b + half;
  }
  return f;
}

double t_critical_95(int dof) {
  // Two-sided 95% (the 0.975 quantile) of Student's t, dof 1..30, then 40, 60, 120 and infinity.
  static const double table[] = {12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060,
                                 2.2622,  2.2281, 2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199,
                                 2.1098,  2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
                                 2.0595,  2.0555, 2.0518, 2.0484, 2.0452, 2.0423};
  static const std::pair<double, double> tail[] = {{30, 2.0423}, {40, 2.0211}, {60, 2.0003}, {120, 1.9799}};
  if (dof < 1) return NAN;
  if (dof <= 30) return table[dof - 1];
  for (std::size_t i = 0; i + 1 < std::size(tail); ++i)
    if (dof <= tail[i + 1].first) {
      const double u = (1.0 / tail[i].first - 1.0 / dof) / (1.0 / tail[i].first - 1.0 / tail[i + 1].first);
      return tail[i].second + u * (tail[i + 1].second - tail[i].second);
    }
  const double u = 120.0 / dof;  // 1/dof over 1/120: from 1.9799 at 120 to 1.96 at infinity
  return 1.96 + u * (1.9799 - 1.96);
}

MeanInterval mean_interval95(const std::vector<double>& v) {
  MeanInterval m;
  m.n = static_cast<int>(v.size());
  if (v.empty()) return m;
  for (double x : v) m.mean += x;
  m.mean /= static_cast<double>(v.size());
  m.lo = m.hi = m.mean;
  if (v.size() < 2) return m;
  double ss = 0;
  for (double x : v) ss += (x - m.mean) * (x - m.mean);
  m.sd = std::sqrt(ss / (m.n - 1));
  const double half = t_critical_95(m.n - 1) * m.sd / std::sqrt(static_cast<double>(m.n));
  m.lo = m.mean - half;
  m.hi = m.mean + half;
  return m;
}

ordered_json build_report(const SweepSpec& spec, const std::vector<SweepRun>& runs) {
  std::vector<RunResult> rows;
  std::set<std::string> abilities;
  for (const auto& r : runs) {
    RunResult row = read_run(r);
    for (const auto& [k, v] : row.scores) abilities.insert(k);
    rows.push_back(std::move(row));
  }
  std::vector<std::string> axes;
  for (const auto& [k, v] : spec.axes) axes.push_back(k);
  const std::vector<std::string> ab(abilities.begin(), abilities.end());

  // ---- CSV: one row per run --------------------------------------------------------------------
  std::string csv = "run,dir";
  for (const auto& a : axes) csv += "," + a;
  for (const auto& a : ab) csv += ",records_" + a;
  for (const auto& a : ab) csv += "," + a;
  csv += "\n";
  ordered_json runs_json = ordered_json::array();
  int finished = 0;
  for (const auto& row : rows) {
    const bool done = run_finished(*row.run);  // trained (and evaluated, if it evaluates)
    finished += done;
    std::map<std::string, std::string> vals(row.run->values.begin(), row.run->values.end());
    csv += row.run->name + "," + row.run->dir;
    for (const auto& a : axes) csv += "," + (vals.count(a) ? vals[a] : std::string());
    for (const auto& a : ab) csv += "," + (row.amounts.count(a) ? fmt(row.amounts.at(a), 0) : std::string());
    for (const auto& a : ab) csv += "," + (row.scores.count(a) ? fmt(row.scores.at(a), 4) : std::string());
    csv += "\n";
    ordered_json vj = ordered_json::object();
    for (const auto& [k, v] : row.run->values) vj[k] = v;
    runs_json.push_back({{"name", row.run->name},
                         {"dir", row.run->dir},
                         {"values", vj},
                         {"records", row.amounts},
                         {"scores", row.scores},
                         {"finished", done}});
  }

  // ---- groups: every axis but the seed, mean ± std over seeds ---------------------------------
  std::vector<std::string> group_axes;
  for (const auto& a : axes)
    if (a != "seed") group_axes.push_back(a);
  std::map<std::vector<std::string>, std::vector<const RunResult*>> groups;
  std::vector<std::vector<std::string>> order;
  for (const auto& row : rows) {
    if (row.scores.empty()) continue;
    std::map<std::string, std::string> vals(row.run->values.begin(), row.run->values.end());
    std::vector<std::string> key;
    for (const auto& a : group_axes) key.push_back(vals.count(a) ? vals[a] : "-");
    if (!groups.count(key)) order.push_back(key);
    groups[key].push_back(&row);
  }
  ordered_json groups_json = ordered_json::array();
  std::string md = "| " + [&] {
    std::string h;
    for (const auto& a : group_axes) h += a + " | ";
    for (const auto& a : ab) h += a + " records | ";
    for (const auto& a : ab) h += a + " | ";
    return h + "seeds |";
  }() + "\n|" + [&] {
    std::string h;
    for (std::size_t i = 0; i < group_axes.size() + 2 * ab.size() + 1; ++i) h += "---|";
    return h;
  }() + "\n";
  for (const auto& key : order) {
    const auto& g = groups[key];
    ordered_json gj = ordered_json::object();
    for (std::size_t i = 0; i < group_axes.size(); ++i) gj[group_axes[i]] = key[i];
    md += "| ";
    for (const auto& k : key) md += k + " | ";
    ordered_json amounts = ordered_json::object(), means = ordered_json::object(),
                 stds = ordered_json::object(), ci95 = ordered_json::object();
    for (const auto& a : ab) {
      double m = 0;
      int n = 0;
      for (const RunResult* r : g)
        if (r->amounts.count(a)) {
          m += r->amounts.at(a);
          ++n;
        }
      amounts[a] = n ? m / n : 0.0;
      md += (n ? fmt(m / n, 0) : std::string("-")) + " | ";
    }
    for (const auto& a : ab) {
      std::vector<double> v;
      for (const RunResult* r : g)
        if (r->scores.count(a)) v.push_back(r->scores.at(a));
      const MeanInterval m = mean_interval95(v);
      means[a] = m.mean;
      stds[a] = m.sd;
      if (!v.empty()) ci95[a] = {m.lo, m.hi};
      md += v.empty() ? "- | " : fmt(100 * m.mean, 1) + " ± " + fmt(100 * m.sd, 1) + " | ";
    }
    md += std::to_string(g.size()) + " |\n";
    gj["records"] = amounts;
    gj["mean"] = means;
    gj["std"] = stds;
    gj["ci95"] = ci95;
    gj["seeds"] = g.size();
    groups_json.push_back(gj);
  }

  // ---- fits: score = a + b ln(records) per ability, over runs where the amount varies ----------
  ordered_json fits = ordered_json::object();
  for (const auto& a : ab) {
    std::vector<double> x, y;
    std::set<double> distinct;
    for (const auto& row : rows)
      if (row.scores.count(a) && row.amounts.count(a)) {
        x.push_back(row.amounts.at(a));
        y.push_back(row.scores.at(a));
        distinct.insert(row.amounts.at(a));
      }
    if (distinct.size() < 2) continue;
    LogFit f = fit_log(x, y);
    fits[a] = {
        {"a", f.a}, {"b", f.b}, {"r2", std::isnan(f.r2) ? ordered_json() : ordered_json(f.r2)}, {"n", f.n}};
    if (!std::isnan(f.b_lo)) fits[a]["b_ci95"] = {f.b_lo, f.b_hi};
    md += "\n" + a + ": score = " + fmt(f.a, 4) + " + " + fmt(f.b, 4) + " ln(records)" +
          (std::isnan(f.b_lo) ? std::string()
                              : " (b in [" + fmt(f.b_lo, 4) + ", " + fmt(f.b_hi, 4) + "], 95%)") +
          ", R^2 = " + (std::isnan(f.r2) ? std::string("n/a (constant scores)") : fmt(f.r2, 3)) + " (" +
          std::to_string(f.n) + " runs)";
  }
  if (!fits.empty()) md += "\n";
  md = "Sweep `" + spec.name + "` (" + spec.file + "): " + std::to_string(finished) + " of " +
       std::to_string(rows.size()) + " runs finished. Scores in %, mean ± std over seeds.\n\n" + md;

  ordered_json report = {
      {"sweep", spec.name},    {"file", spec.file},    {"axes", axes},         {"group_axes", group_axes},
      {"abilities", ab},       {"finished", finished}, {"total", rows.size()}, {"runs", runs_json},
      {"groups", groups_json}, {"fits", fits}};
  fs::make_dirs(spec.output_dir);
  fs::write_file_atomic(fs::join(spec.output_dir, "report.csv"), csv);
  fs::write_file_atomic(fs::join(spec.output_dir, "report.md"), md);
  fs::write_file_atomic(fs::join(spec.output_dir, "report.json"), report.dump(1) + "\n");
  return report;
}

}  // namespace sft::sweep
