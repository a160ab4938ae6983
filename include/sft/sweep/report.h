// `sft sweep report`: collects each run's final evaluation scores into
//   <output_dir>/report.csv   one row per run: axis values, data amounts, scores
//   <output_dir>/report.md    mean ± std over seeds for every other combination of axes
//   <output_dir>/report.json  all of it, plus the fits and each mean's 95% interval over
//                             seeds (groups[].ci95), for scripts/plot_sweep.py
// and fits score = a + b ln(data amount) per ability (least squares, with R^2), the
// paper's log-linear scaling of math and code. The data amount of an ability is the
// number of distinct training records of that ability's datasets in the run.
#pragma once

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sft/sweep/sweep.h"

namespace sft::sweep {

// b_lo, b_hi: the slope's 95% interval (Student's t with n - 2 degrees of freedom), NaN
// with fewer than 3 points.
struct LogFit {
  double a = 0, b = 0, r2 = 0;  // r2 is NaN when every score is the same
  double b_lo = NAN, b_hi = NAN;
  int n = 0;
};
LogFit fit_log(const std::vector<double>& amount, const std::vector<double>& score);

// Student's t two-sided 95% critical value for `dof` degrees of freedom (dof >= 1): the
// standard table to 30, then interpolated in 1/dof to the normal's 1.96.
double t_critical_95(int dof);

// The mean of per-seed scores, their sample standard deviation, and the mean's two-sided
// 95% confidence interval (t with n - 1 degrees of freedom); with one score, sd = 0 and
// lo = hi = mean (no spread to estimate).
struct MeanInterval {
  double mean = 0, sd = 0, lo = 0, hi = 0;
  int n = 0;
};
MeanInterval mean_interval95(const std::vector<double>& scores);

// Reads the runs' results; writes the three files; returns report.json's content.
nlohmann::ordered_json build_report(const SweepSpec& spec, const std::vector<SweepRun>& runs);

}  // namespace sft::sweep
