#include "sft/data/strategy.h"

#include <cmath>
#include <cstdio>

#include "sft/util/error.h"
#include "sft/util/log.h"
#include "sft/util/rng.h"

namespace sft::data {

std::uint64_t dataset_seed(std::uint64_t run_seed, const std::string& dataset) {
  return seed_combine(run_seed, seed_from_string("dataset:" + dataset));
}

namespace {
// 1/256 as 0.00390625, 1e-300 as 1e-300 (std::to_string prints both as 0.00...).
std::string fmt_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}
}  // namespace

std::int64_t fraction_count(double f, std::int64_t n) {
  // A small epsilon keeps exact products (0.25 * 1024) from rounding the wrong way.
  return static_cast<std::int64_t>(std::floor(f * static_cast<double>(n) + 0.5 + 1e-9));
}

std::vector<std::int64_t> DataPlan::records_of(const SourceSelection& s) const {
  const auto& perm = permutations[s.dataset_index()];
  return std::vector<std::int64_t>(perm.begin(), perm.begin() + s.records);
}

DataPlan plan_data(const config::RunConfig& cfg, const std::vector<std::int64_t>& records_per_dataset,
                   const std::vector<bool>& estimated) {
  DataPlan plan;
  plan.dataset_records = records_per_dataset;
  plan.dataset_size_estimated =
      estimated.empty() ? std::vector<bool>(records_per_dataset.size(), false) : estimated;
  std::string errors;
  auto fail = [&](const std::string& msg) { errors += (errors.empty() ? "" : "\n") + msg; };

  for (std::size_t i = 0; i < cfg.datasets.size(); ++i) {
    const auto& d = cfg.datasets[i];
    std::int64_t n = records_per_dataset[i];
    std::int64_t sel = fraction_count(d.fraction, n);
    if (sel < 1) {
      // ceil(0.5 / fraction) overflows int64 for fractions below ~5e-20 (1e-300: inf).
      const double needed = std::ceil(0.5 / d.fraction);
      fail("datasets." + d.name + ".fraction: " + fmt_number(d.fraction) + " of " + std::to_string(n) +
           " records selects none; " +
           (needed < 1e15
                ? "the dataset needs at least " + std::to_string(static_cast<std::int64_t>(needed)) +
                      " records for this fraction"
                : std::string("no real dataset is large enough for this fraction: give a larger one")));
    }
    plan.dataset_selected.push_back(sel);
    plan.permutations.push_back(permutation(n, dataset_seed(cfg.data_seed(), d.name)));
  }

  for (std::size_t s = 0; s < cfg.stages.size(); ++s) {
    const auto& st = cfg.stages[s];
    StageSelection sel;
    sel.stage = &st;
    for (const auto& src : st.sources) {
      const std::size_t di = src.dataset_index;
      SourceSelection x{&src, &cfg.datasets[di], fraction_count(src.share, plan.dataset_selected[di])};
      if (x.records < 1 && plan.dataset_selected[di] > 0 && src.replay) {
        // A replay share too small for the data (k = 1/256 of a 1/64 subset) replays
        // nothing; say so rather than fail, so sweeps over fractions x k run through.
        sft::log::warn(
            "stage {} ({}): replay fraction {:g} of the {} selected {} records selects none; "
            "the stage replays no {} data",
            s + 1, st.name, src.share, plan.dataset_selected[di], src.dataset, src.dataset);
      } else if (x.records < 1 && plan.dataset_selected[di] > 0)
        fail("stages[" + std::to_string(s) + "] (" + st.name +
             "): " + (src.replay ? "replay fraction " : "fraction ") + std::to_string(src.share) +
             " of the " + std::to_string(plan.dataset_selected[di]) + " selected " + src.dataset +
             " records selects none; use a larger fraction or more data");
      sel.samples += x.samples();
      sel.sources.push_back(x);
    }
    plan.stages.push_back(std::move(sel));
  }
  if (!errors.empty()) throw ConfigError(errors);
  return plan;
}

}  // namespace sft::data
