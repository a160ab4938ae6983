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

namespace {

// Every run's results, in the sweep's order.
std::vector<RunResult> read_runs(const std::vector<SweepRun>& runs) {
  std::vector<RunResult> rows;
  for (const auto& r : runs) rows.push_back(read_run(r));
  return rows;
}

// The abilities any run has a score for, sorted.
std::vector<std::string> scored_abilities(const std::vector<RunResult>& rows) {
  std::set<std::string> abilities;
  for (const auto& row : rows)
    for (const auto& [k, v] : row.scores) abilities.insert(k);
  return {abilities.begin(), abilities.end()};
}

// A run's value on an axis, or `missing` when it has none.
std::string axis_value(const RunResult& row, const std::string& axis, const std::string& missing) {
  for (const auto& [key, value] : row.run->values)
    if (key == axis) return value;
  return missing;
}

// One part of the report: its JSON and its text (CSV or Markdown).
struct Section {
  ordered_json json;
  std::string text;
};

// report.csv (one row per run) and the runs' JSON; `finished` counts the finished runs.
Section runs_csv(const std::vector<RunResult>& rows, const std::vector<std::string>& axes,
                 const std::vector<std::string>& ab, int* finished) {
  Section s{ordered_json::array(), "run,dir"};
  std::string& csv = s.text;
  for (const auto& a : axes) csv += "," + a;
  for (const auto& a : ab) csv += ",records_" + a;
  for (const auto& a : ab) csv += "," + a;
  csv += "\n";
  for (const auto& row : rows) {
    const bool done = run_finished(*row.run);  // trained (and evaluated, if it evaluates)
    *finished += done;
    csv += row.run->name + "," + row.run->dir;
    for (const auto& a : axes) csv += "," + axis_value(row, a, std::string());
    for (const auto& a : ab) csv += "," + (row.amounts.count(a) ? fmt(row.amounts.at(a), 0) : std::string());
    for (const auto& a : ab) csv += "," + (row.scores.count(a) ? fmt(row.scores.at(a), 4) : std::string());
    csv += "\n";
    ordered_json vj = ordered_json::object();
    for (const auto& [k, v] : row.run->values) vj[k] = v;
    s.json.push_back({{"name", row.run->name},
                      {"dir", row.run->dir},
                      {"values", vj},
                      {"records", row.amounts},
                      {"scores", row.scores},
                      {"finished", done}});
  }
  return s;
}

// The scored runs grouped by their values on group_axes, groups in order of first appearance.
struct Groups {
  std::map<std::vector<std::string>, std::vector<const RunResult*>> members;
  std::vector<std::vector<std::string>> order;
};

Groups group_runs(const std::vector<RunResult>& rows, const std::vector<std::string>& group_axes) {
  Groups g;
  for (const auto& row : rows) {
    if (row.scores.empty()) continue;
    std::vector<std::string> key;
    for (const auto& a : group_axes) key.push_back(axis_value(row, a, "-"));
    if (!g.members.count(key)) g.order.push_back(key);
    g.members[key].push_back(&row);
  }
  return g;
}

// The groups table's header and its rule line.
std::string groups_md_header(const std::vector<std::string>& group_axes, const std::vector<std::string>& ab) {
  std::string h = "| ";
  for (const auto& a : group_axes) h += a + " | ";
  for (const auto& a : ab) h += a + " records | ";
  for (const auto& a : ab) h += a + " | ";
  h += "seeds |\n|";
  for (std::size_t i = 0; i < group_axes.size() + 2 * ab.size() + 1; ++i) h += "---|";
  return h + "\n";
}

// One group's row: mean records per ability, then mean ± std of each ability's score over seeds.
Section group_row(const std::vector<std::string>& key, const std::vector<const RunResult*>& g,
                  const std::vector<std::string>& group_axes, const std::vector<std::string>& ab) {
  Section s{ordered_json::object(), "| "};
  for (std::size_t i = 0; i < group_axes.size(); ++i) s.json[group_axes[i]] = key[i];
  for (const auto& k : key) s.text += k + " | ";
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
    s.text += (n ? fmt(m / n, 0) : std::string("-")) + " | ";
  }
  for (const auto& a : ab) {
    std::vector<double> v;
    for (const RunResult* r : g)
      if (r->scores.count(a)) v.push_back(r->scores.at(a));
    const MeanInterval m = mean_interval95(v);
    means[a] = m.mean;
    stds[a] = m.sd;
    if (!v.empty()) ci95[a] = {m.lo, m.hi};
    s.text += v.empty() ? "- | " : fmt(100 * m.mean, 1) + " ± " + fmt(100 * m.sd, 1) + " | ";
  }
  s.text += std::to_string(g.size()) + " |\n";
  s.json["records"] = amounts;
  s.json["mean"] = means;
  s.json["std"] = stds;
  s.json["ci95"] = ci95;
  s.json["seeds"] = g.size();
  return s;
}

// The groups' JSON and Markdown table: every axis but the seed, mean ± std over seeds.
Section groups_table(const std::vector<RunResult>& rows, const std::vector<std::string>& group_axes,
                     const std::vector<std::string>& ab) {
  Groups groups = group_runs(rows, group_axes);
  Section s{ordered_json::array(), groups_md_header(group_axes, ab)};
  for (const auto& key : groups.order) {
    Section row = group_row(key, groups.members[key], group_axes, ab);
    s.text += row.text;
    s.json.push_back(std::move(row.json));
  }
  return s;
}

// One ability's fit as a line of report.md.
std::string fit_md(const std::string& a, const LogFit& f) {
  return "\n" + a + ": score = " + fmt(f.a, 4) + " + " + fmt(f.b, 4) + " ln(records)" +
         (std::isnan(f.b_lo) ? std::string()
                             : " (b in [" + fmt(f.b_lo, 4) + ", " + fmt(f.b_hi, 4) + "], 95%)") +
         ", R^2 = " + (std::isnan(f.r2) ? std::string("n/a (constant scores)") : fmt(f.r2, 3)) + " (" +
         std::to_string(f.n) + " runs)";
}

// score = a + b ln(records) per ability, over runs where the amount varies.
Section fits_by_ability(const std::vector<RunResult>& rows, const std::vector<std::string>& ab) {
  Section s{ordered_json::object(), ""};
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
    s.json[a] = {
        {"a", f.a}, {"b", f.b}, {"r2", std::isnan(f.r2) ? ordered_json() : ordered_json(f.r2)}, {"n", f.n}};
    if (!std::isnan(f.b_lo)) s.json[a]["b_ci95"] = {f.b_lo, f.b_hi};
    s.text += fit_md(a, f);
  }
  if (!s.json.empty()) s.text += "\n";
  return s;
}

}  // namespace

ordered_json build_report(const SweepSpec& spec, const std::vector<SweepRun>& runs) {
  const std::vector<RunResult> rows = read_runs(runs);
  const std::vector<std::string> ab = scored_abilities(rows);
  std::vector<std::string> axes, group_axes;
  for (const auto& [k, v] : spec.axes) axes.push_back(k);
  for (const auto& a : axes)
    if (a != "seed") group_axes.push_back(a);
  int finished = 0;
  const Section run_table = runs_csv(rows, axes, ab, &finished);
  const Section groups = groups_table(rows, group_axes, ab);
  const Section fits = fits_by_ability(rows, ab);
  const std::string md = "Sweep `" + spec.name + "` (" + spec.file + "): " + std::to_string(finished) +
                         " of " + std::to_string(rows.size()) +
                         " runs finished. Scores in %, mean ± std over seeds.\n\n" + groups.text + fits.text;
  ordered_json report = {{"sweep", spec.name},       {"file", spec.file},      {"axes", axes},
                         {"group_axes", group_axes}, {"abilities", ab},        {"finished", finished},
                         {"total", rows.size()},     {"runs", run_table.json}, {"groups", groups.json},
                         {"fits", fits.json}};
  fs::make_dirs(spec.output_dir);
  fs::write_file_atomic(fs::join(spec.output_dir, "report.csv"), run_table.text);
  fs::write_file_atomic(fs::join(spec.output_dir, "report.md"), md);
  fs::write_file_atomic(fs::join(spec.output_dir, "report.json"), report.dump(1) + "\n");
  return report;
}

}  // namespace sft::sweep
