// `sft sweep report`: collects each run's final evaluation scores into
//   <output_dir>/report.csv   one row per run: axis values, data amounts, scores
//   <output_dir>/report.md    mean ± std over seeds for every other combination of axes
//   <output_dir>/report.json  all of it, plus the fits, for scripts/plot_sweep.py
// and fits score = a + b ln(data amount) per ability (least squares, with R^2), the
// paper's log-linear scaling of math and code. The data amount of an ability is the
// number of distinct training records of that ability's datasets in the run.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sft/sweep/sweep.h"

namespace sft::sweep {

struct LogFit {
  double a = 0, b = 0, r2 = 0;  // r2 is NaN when every score is the same
  int n = 0;
};
LogFit fit_log(const std::vector<double>& amount, const std::vector<double>& score);

// Reads the runs' results; writes the three files; returns report.json's content.
nlohmann::ordered_json build_report(const SweepSpec& spec, const std::vector<SweepRun>& runs);

}  // namespace sft::sweep
