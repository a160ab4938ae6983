// The analysis plan's statistics against known answers: distribution functions and intervals
// against mpmath (30 digits; scipy is not installed here), the lack-of-fit and saturating-fit
// tests on curves whose shape is known, and the bootstrap interval's coverage on simulated data.
#include "sft/sweep/stats.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "sft/util/rng.h"

namespace sft::sweep::stats {
namespace {

TEST(Stats, DistributionFunctionsMatchMpmath) {
  EXPECT_NEAR(incomplete_beta(2.5, 4, 0.3), 0.352197585906767, 1e-12);
  EXPECT_NEAR(incomplete_beta(1, 1, 0.42), 0.42, 1e-14);
  EXPECT_NEAR(t_quantile(0.975, 2), 4.30265272974946, 1e-9);
  EXPECT_NEAR(t_quantile(0.975, 7.3), 2.34506673654770, 1e-9);  // a Welch df is not a whole number
  EXPECT_NEAR(t_cdf(0, 5), 0.5, 1e-15);
  EXPECT_NEAR(f_upper_tail(3.7, 3, 10), 0.0502749340800599, 1e-12);
  EXPECT_NEAR(f_upper_tail(1.3, 2, 5), 0.351067826200577, 1e-12);
  EXPECT_NEAR(f_upper_tail(144, 3, 10), 1.58945500111193e-8, 1e-15);  // the F(3,10) = 144
}

// Five runs of one side, three of the other; the first three share their seeds' data.
// Welch uses all eight runs (df 4.08 by Welch-Satterthwaite); paired uses the three pairs.
// Reference values from mpmath (/tmp/ref.py in the commit message's session; formulas in stats.h).
TEST(Stats, WelchAndPairedIntervalsOnKnownData) {
  const std::vector<double> a = {61, 58, 66, 55, 63}, b = {50, 47, 56};
  const Diff w = welch95(a, b);
  EXPECT_EQ(w.method, "welch");
  EXPECT_EQ(w.n_a, 5);
  EXPECT_EQ(w.n_b, 3);
  EXPECT_NEAR(w.effect, 9.6, 1e-12);
  EXPECT_NEAR(w.df, 4.08043405664138, 1e-10);
  EXPECT_NEAR(w.lo, 0.605041339910133, 1e-8);
  EXPECT_NEAR(w.hi, 18.5949586600899, 1e-8);
  const Diff p = paired95({61, 58, 66}, b);
  EXPECT_EQ(p.n_a, 3);
  EXPECT_NEAR(p.effect, 10.6666666666667, 1e-10);
  EXPECT_NEAR(p.lo, 9.23244909008351, 1e-8);
  EXPECT_NEAR(p.hi, 12.1008842432498, 1e-8);
  EXPECT_FALSE(welch95({1}, {2, 3}).defined());  // one run on a side: no spread to estimate
  EXPECT_FALSE(paired95({1}, {2}).defined());
}

// Five shares (log2 records 5, 7, 9, 11, 13) x three seeds, with a known small wobble per seed.
struct Curve {
  std::vector<double> x, y;
};
Curve curve(double (*f)(double)) {
  const double wobble[] = {-0.8, 0.3, 0.5};
  Curve c;
  for (double x : {5.0, 7.0, 9.0, 11.0, 13.0})
    for (double w : wobble) {
      c.x.push_back(x);
      c.y.push_back(f(x) + w);
    }
  return c;
}
double log_linear(double x) { return 6 * (x - 5) + 10; }                          // 10 .. 58
double threshold(double x) { return x < 10 ? 0 : x < 12 ? 58.5 : 74.6; }          // the code curve
double saturating(double x) { return 10 + 50 / (1 + std::exp(-(x - 7) / 0.7)); }  // flat from 9 on

TEST(Stats, LackOfFitPassesALineAndRejectsAThresholdAndASaturatingCurve) {
  const Curve lin = curve(log_linear), thr = curve(threshold), sat = curve(saturating);
  const LackOfFit l = lack_of_fit(lin.x, lin.y);
  ASSERT_TRUE(l.defined);
  EXPECT_EQ(l.m, 5);
  EXPECT_EQ(l.df_lack, 3);
  EXPECT_EQ(l.df_pure, 10);
  EXPECT_GT(l.p, 0.05);  // the group means lie on the line: no lack of fit
  EXPECT_LT(lack_of_fit(thr.x, thr.y).p, 0.001);
  EXPECT_LT(lack_of_fit(sat.x, sat.y).p, 0.001);
  // Not defined without replicates or with fewer than three shares.
  EXPECT_FALSE(lack_of_fit({1, 2, 3}, {1, 2, 3}).defined);
  EXPECT_FALSE(lack_of_fit({1, 1, 2, 2}, {1, 2, 3, 4}).defined);
}

TEST(Stats, TheLogisticFitsClearlyBetterOnlyWhereTheCurveSaturates) {
  const Curve lin = curve(log_linear), thr = curve(threshold), sat = curve(saturating);
  EXPECT_LE(fit_logistic(lin.x, lin.y).delta_aic, 2.0);  // two more parameters buy nothing
  const SaturatingFit s = fit_logistic(sat.x, sat.y);
  EXPECT_GT(s.delta_aic, 10.0);
  EXPECT_NEAR(s.lo, 10, 1.0);
  EXPECT_NEAR(s.hi, 60, 1.0);
  EXPECT_GT(fit_logistic(thr.x, thr.y).delta_aic, 10.0);
}

// The percentile interval of a ratio of means, over many simulated studies whose true ratio is
// known (0.5): it should cover it about 95% of the time. 400 studies of 20 seeds a side.
TEST(Stats, BootstrapIntervalCoversTheTrueRatio) {
  Rng rng(7);
  auto normal = [&] {  // Box-Muller
    const double u = 1 - rng.uniform(), v = rng.uniform();
    return std::sqrt(-2 * std::log(u)) * std::cos(2 * M_PI * v);
  };
  const int studies = 400;
  int covered = 0;
  for (int s = 0; s < studies; ++s) {
    std::vector<std::vector<double>> g(2);
    for (int i = 0; i < 20; ++i) {
      g[0].push_back(30 + 4 * normal());
      g[1].push_back(60 + 4 * normal());
    }
    const Bootstrap b = bootstrap95(
        g, [](const auto& r) { return mean(r[0]) / mean(r[1]); }, 400, 1000 + s);
    ASSERT_EQ(b.n, 20);
    covered += b.lo <= 0.5 && 0.5 <= b.hi;
  }
  EXPECT_GE(covered, 0.90 * studies);  // binomial sd at 95%: 1.1 points; percentile intervals run a bit short
  EXPECT_LE(covered, 0.99 * studies);
  // The same seed gives the same interval.
  const std::vector<std::vector<double>> g = {{1, 2, 3}, {4, 5, 7}};
  auto stat = [](const auto& r) { return mean(r[0]) / mean(r[1]); };
  EXPECT_EQ(bootstrap95(g, stat, 500, 3).lo, bootstrap95(g, stat, 500, 3).lo);
}

}  // namespace
}  // namespace sft::sweep::stats
