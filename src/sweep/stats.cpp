#include "sft/sweep/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "sft/util/rng.h"

namespace sft::sweep::stats {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The continued fraction of I_x(a, b) (Numerical Recipes' betacf, modified Lentz).
double beta_fraction(double a, double b, double x) {
  const double tiny = 1e-300, eps = 1e-15;
  double c = 1, d = 1 - (a + b) * x / (a + 1);
  if (std::abs(d) < tiny) d = tiny;
  d = 1 / d;
  double h = d;
  for (int m = 1; m <= 10000; ++m) {
    const double m2 = 2.0 * m;
    double aa = m * (b - m) * x / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d;
    if (std::abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (std::abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d;
    if (std::abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (std::abs(c) < tiny) c = tiny;
    d = 1 / d;
    const double del = d * c;
    h *= del;
    if (std::abs(del - 1) < eps) break;
  }
  return h;
}

}  // namespace

double incomplete_beta(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const double front =
      std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x));
  // The fraction converges fast for x < (a + 1) / (a + b + 2); otherwise use the symmetry.
  if (x < (a + 1) / (a + b + 2)) return front * beta_fraction(a, b, x) / a;
  return 1 - front * beta_fraction(b, a, 1 - x) / b;
}

double t_cdf(double t, double df) {
  if (std::isinf(t)) return t > 0 ? 1 : 0;
  const double tail = 0.5 * incomplete_beta(df / 2, 0.5, df / (df + t * t));
  return t > 0 ? 1 - tail : tail;
}

double t_quantile(double p, double df) {
  if (!(p > 0 && p < 1) || !(df > 0)) return kNaN;
  double lo = -1e4, hi = 1e4;  // bisection: the CDF is monotone; 200 halvings reach double precision
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (t_cdf(mid, df) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

double f_upper_tail(double f, double d1, double d2) {
  if (std::isinf(f)) return 0;
  if (f <= 0) return 1;
  return incomplete_beta(d2 / 2, d1 / 2, d2 / (d2 + d1 * f));
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? kNaN : s / static_cast<double>(v.size());
}

namespace {
double variance(const std::vector<double>& v) {  // sample variance (n - 1)
  const double m = mean(v);
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return ss / static_cast<double>(v.size() - 1);
}
}  // namespace

Diff paired95(const std::vector<double>& a, const std::vector<double>& b) {
  Diff d;
  d.method = "paired t";
  const std::size_t n = std::min(a.size(), b.size());
  d.n_a = d.n_b = static_cast<int>(n);
  std::vector<double> diff;
  for (std::size_t i = 0; i < n; ++i) diff.push_back(a[i] - b[i]);
  d.effect = n ? mean(diff) : kNaN;
  if (n < 2) {
    d.lo = d.hi = d.df = kNaN;
    return d;
  }
  d.df = static_cast<double>(n - 1);
  const double half = t_quantile(0.975, d.df) * std::sqrt(variance(diff) / static_cast<double>(n));
  d.lo = d.effect - half;
  d.hi = d.effect + half;
  return d;
}

Diff welch95(const std::vector<double>& a, const std::vector<double>& b) {
  Diff d;
  d.method = "welch";
  d.n_a = static_cast<int>(a.size());
  d.n_b = static_cast<int>(b.size());
  d.effect = a.empty() || b.empty() ? kNaN : mean(a) - mean(b);
  if (a.size() < 2 || b.size() < 2) {
    d.lo = d.hi = d.df = kNaN;
    return d;
  }
  const double va = variance(a) / d.n_a, vb = variance(b) / d.n_b, se2 = va + vb;
  if (se2 == 0) {  // both sides constant: the difference is known exactly
    d.lo = d.hi = d.effect;
    d.df = d.n_a + d.n_b - 2;
    return d;
  }
  d.df = se2 * se2 / (va * va / (d.n_a - 1) + vb * vb / (d.n_b - 1));
  const double half = t_quantile(0.975, d.df) * std::sqrt(se2);
  d.lo = d.effect - half;
  d.hi = d.effect + half;
  return d;
}

LineFit fit_line(const std::vector<double>& x, const std::vector<double>& y) {
  LineFit f;
  f.n = static_cast<int>(x.size());
  f.b_lo = f.b_hi = kNaN;
  if (f.n < 2) return f;
  const double mx = mean(x), my = mean(y);
  double sxx = 0, sxy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    sxx += (x[i] - mx) * (x[i] - mx);
    sxy += (x[i] - mx) * (y[i] - my);
  }
  if (sxx == 0) return f;
  f.b = sxy / sxx;
  f.a = my - f.b * mx;
  for (std::size_t i = 0; i < x.size(); ++i) f.rss += std::pow(y[i] - f.a - f.b * x[i], 2);
  if (f.n >= 3) {
    const double half = t_quantile(0.975, f.n - 2) * std::sqrt(f.rss / (f.n - 2) / sxx);
    f.b_lo = f.b - half;
    f.b_hi = f.b + half;
  }
  return f;
}

LackOfFit lack_of_fit(const std::vector<double>& x, const std::vector<double>& y) {
  LackOfFit t;
  t.n = static_cast<int>(x.size());
  std::vector<double> xs = x;
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  t.m = static_cast<int>(xs.size());
  if (t.m < 3 || t.n <= t.m) return t;
  const LineFit line = fit_line(x, y);
  double pure = 0;
  for (double g : xs) {
    std::vector<double> ys;
    for (std::size_t i = 0; i < x.size(); ++i)
      if (x[i] == g) ys.push_back(y[i]);
    const double m = mean(ys);
    for (double v : ys) pure += (v - m) * (v - m);
  }
  const double lack = std::max(0.0, line.rss - pure);
  t.df_lack = t.m - 2;
  t.df_pure = t.n - t.m;
  t.defined = true;
  const double scale = 1e-12 * (line.rss + pure + 1e-300);  // below this, a sum of squares is rounding
  if (lack <= scale) {
    t.f = 0;
    t.p = 1;
  } else if (pure <= scale) {
    t.f = std::numeric_limits<double>::infinity();
    t.p = 0;
  } else {
    t.f = (lack / t.df_lack) / (pure / t.df_pure);
    t.p = f_upper_tail(t.f, t.df_lack, t.df_pure);
  }
  return t;
}

namespace {

// Given mid and scale the logistic is linear in (lo, hi - lo): solve those two exactly.
double logistic_rss(const std::vector<double>& x, const std::vector<double>& y, double mid, double scale,
                    double* lo, double* hi) {
  std::vector<double> s(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) s[i] = 1 / (1 + std::exp(-(x[i] - mid) / scale));
  const LineFit f = fit_line(s, y);  // y = lo + (hi - lo) s
  double a = f.a, b = f.b;
  if (f.n >= 2 && f.rss == 0 && b == 0) a = mean(y);
  double rss = 0;
  for (std::size_t i = 0; i < x.size(); ++i) rss += std::pow(y[i] - a - b * s[i], 2);
  *lo = a;
  *hi = a + b;
  return rss;
}

double aic(double rss, int n, int k) {
  // A perfect fit has RSS 0 and AIC -inf; a floor keeps the comparison finite and symmetric.
  const double floor = 1e-12;
  return n * std::log(std::max(rss, floor) / n) + 2 * k;
}

}  // namespace

SaturatingFit fit_logistic(const std::vector<double>& x, const std::vector<double>& y) {
  SaturatingFit f;
  f.n = static_cast<int>(x.size());
  if (f.n < 4) return f;
  const double xmin = *std::min_element(x.begin(), x.end()), xmax = *std::max_element(x.begin(), x.end());
  const double span = std::max(xmax - xmin, 1e-9);
  double best = std::numeric_limits<double>::infinity(), lo = 0, hi = 0;
  for (int i = 0; i <= 80; ++i) {  // mid from a span below the data to a span above it
    const double mid = xmin - span + 3 * span * i / 80;
    for (int j = 0; j <= 40; ++j) {  // scale from span/400 to 10 spans, log-spaced
      const double scale = span / 400 * std::pow(4000.0, j / 40.0);
      const double r = logistic_rss(x, y, mid, scale, &lo, &hi);
      if (r < best) {
        best = r;
        f.mid = mid;
        f.scale = scale;
      }
    }
  }
  double step_mid = 3 * span / 80, step_log = std::log(4000.0) / 40;  // then a pattern search
  for (int it = 0; it < 200 && step_mid > 1e-9; ++it) {
    bool moved = false;
    for (const auto& [dm, ds] : {std::pair{1, 0}, {-1, 0}, {0, 1}, {0, -1}}) {
      const double mid = f.mid + dm * step_mid, scale = f.scale * std::exp(ds * step_log);
      const double r = logistic_rss(x, y, mid, scale, &lo, &hi);
      if (r < best) {
        best = r;
        f.mid = mid;
        f.scale = scale;
        moved = true;
      }
    }
    if (!moved) {
      step_mid /= 2;
      step_log /= 2;
    }
  }
  f.rss = logistic_rss(x, y, f.mid, f.scale, &f.lo, &f.hi);
  f.aic_line = aic(fit_line(x, y).rss, f.n, 3);
  f.aic_logistic = aic(f.rss, f.n, 5);
  f.delta_aic = f.aic_line - f.aic_logistic;
  return f;
}

Bootstrap bootstrap95(const std::vector<std::vector<double>>& groups, const Stat& stat, int resamples,
                      std::uint64_t seed) {
  Bootstrap b;
  b.resamples = resamples;
  b.estimate = stat(groups);
  b.n = groups.empty() ? 0 : static_cast<int>(groups[0].size());
  for (const auto& g : groups) b.n = std::min(b.n, static_cast<int>(g.size()));
  b.lo = b.hi = kNaN;
  if (b.n < 2) return b;
  Rng rng(seed);
  std::vector<double> values;
  std::vector<std::vector<double>> r(groups.size());
  for (int i = 0; i < resamples; ++i) {
    for (std::size_t g = 0; g < groups.size(); ++g) {
      r[g].resize(groups[g].size());
      for (auto& v : r[g]) v = groups[g][rng.below(groups[g].size())];
    }
    const double s = stat(r);
    if (std::isfinite(s))
      values.push_back(s);
    else
      ++b.undefined;
  }
  if (values.empty()) return b;
  std::sort(values.begin(), values.end());
  auto pct = [&](double q) {  // linear interpolation between order statistics
    const double pos = q * static_cast<double>(values.size() - 1);
    const std::size_t i = static_cast<std::size_t>(pos);
    const double frac = pos - static_cast<double>(i);
    return i + 1 < values.size() ? values[i] * (1 - frac) + values[i + 1] * frac : values[i];
  };
  b.lo = pct(0.025);
  b.hi = pct(0.975);
  return b;
}

}  // namespace sft::sweep::stats
