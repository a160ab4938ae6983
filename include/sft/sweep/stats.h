// The statistics the analysis plan (configs/repro/analysis_plan.yaml) decides its claims with.
// Pure arithmetic, no torch: every function is checked against known answers
// (tests/sweep/stats_test.cpp). Every interval carries the number of observations it rests on.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sft::sweep::stats {

// The regularised incomplete beta I_x(a, b) (Lentz's continued fraction), Student's t CDF
// and two-sided quantile for any real df > 0, and the F distribution's upper tail.
double incomplete_beta(double a, double b, double x);
double t_cdf(double t, double df);
double t_quantile(double p, double df);  // p in (0, 1)
double f_upper_tail(double f, double d1, double d2);

// A difference a - b with its 95% interval. paired: Student's t over the n pairs (the seeds
// both sides ran); welch: Welch's t with the Welch-Satterthwaite df over all of each side.
// Undefined (NaN bounds) with fewer than 2 pairs, or fewer than 2 values on a side.
struct Diff {
  std::string method;  // "paired t" or "welch"
  double effect = 0, lo = 0, hi = 0, df = 0;
  int n_a = 0, n_b = 0;  // paired: both the number of pairs
  bool defined() const { return lo == lo && hi == hi; }
};
Diff paired95(const std::vector<double>& a, const std::vector<double>& b);  // a[i] pairs b[i]
Diff welch95(const std::vector<double>& a, const std::vector<double>& b);

// Least squares y = a + b x with the slope's 95% t interval (n - 2 df).
struct LineFit {
  double a = 0, b = 0, b_lo = 0, b_hi = 0, rss = 0;
  int n = 0;
};
LineFit fit_line(const std::vector<double>& x, const std::vector<double>& y);

// Lack-of-fit F test of the straight line, the replicates at each x (the seeds) giving the
// pure error: F = (SS_lack / (m - 2)) / (SS_pure / (n - m)) for m distinct x and n points.
// p = 1 where the line fits the group means exactly; p = 0 where it misses them and the
// replicates agree exactly (no pure error). Needs m >= 3 and n > m (else defined = false).
struct LackOfFit {
  double f = 0, p = 1, df_lack = 0, df_pure = 0;
  int n = 0, m = 0;
  bool defined = false;
};
LackOfFit lack_of_fit(const std::vector<double>& x, const std::vector<double>& y);

// A saturating curve y = lo + (hi - lo) / (1 + exp(-(x - mid) / scale)), least squares (grid
// over mid and scale, the two levels solved exactly, then a local refinement), and the AIC of
// both fits, n ln(RSS / n) + 2k with k = 3 (line: a, b, sigma) and k = 5 (logistic).
// delta_aic = AIC(line) - AIC(logistic): above 2 the saturating curve fits clearly better.
struct SaturatingFit {
  double lo = 0, hi = 0, mid = 0, scale = 1, rss = 0;
  double aic_line = 0, aic_logistic = 0, delta_aic = 0;
  int n = 0;
};
SaturatingFit fit_logistic(const std::vector<double>& x, const std::vector<double>& y);

// Percentile bootstrap: `groups` are resampled each within itself (with replacement, same
// size), `stat` evaluated on each resample; the 2.5th and 97.5th percentiles of the finite
// values. Deterministic for a seed (sft::Rng). `n` is the smallest group's size.
struct Bootstrap {
  double estimate = 0, lo = 0, hi = 0;
  int n = 0, resamples = 0, undefined = 0;  // undefined: resamples whose stat was not finite
};
using Stat = std::function<double(const std::vector<std::vector<double>>&)>;
Bootstrap bootstrap95(const std::vector<std::vector<double>>& groups, const Stat& stat, int resamples,
                      std::uint64_t seed);

double mean(const std::vector<double>& v);

}  // namespace sft::sweep::stats
