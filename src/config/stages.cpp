// Datasets, and the stages: a strategy preset of Dong et al. (2024) expanded into explicit
// stages, or stages given explicitly.
#include <algorithm>
#include <set>

#include "config/fields.h"

namespace sft::config {
namespace {

bool valid_name(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(),
                                   [](unsigned char c) { return std::isalnum(c) || c == '_' || c == '-'; });
}

bool has_dataset(const RunConfig& c, const std::string& name) {
  return std::any_of(c.datasets.begin(), c.datasets.end(),
                     [&](const DatasetSpec& d) { return d.name == name; });
}

// A stage starts from train.*'s hyper-parameters.
StageSpec default_stage(const RunConfig& c, const std::string& name) {
  StageSpec s;
  static_cast<StageHparams&>(s) = c.train;
  s.name = name;
  return s;
}

}  // namespace

void read_datasets(Reader& r, RunConfig& c) {
  const Tree* ds = r.find("datasets");
  if (!ds || ds->is_null() || (ds->is_object() && ds->empty()))
    return r.error("datasets", "missing: name at least one dataset (name: {path, format, ability})");
  if (!ds->is_object())
    return r.error("datasets", "expected a map of dataset name -> {path, format, ability}");
  for (auto it = ds->begin(); it != ds->end(); ++it) {
    const std::string p = "datasets." + it.key();
    DatasetSpec d;
    d.name = d.ability = it.key();
    if (!valid_name(d.name)) r.error(p, "dataset names may use letters, digits, '_' and '-' only");
    if (!it.value().is_object()) {
      r.error(p, "expected a map {path, format, ability}");
      continue;
    }
    r.check_keys(p, keys(dataset_fields()));
    read_fields(r, p, dataset_fields(), d);
    c.datasets.push_back(std::move(d));
  }
}

namespace {

// strategy.order (every dataset, each once), else the datasets in the order they are given.
std::vector<const DatasetSpec*> strategy_order(Reader& r, const RunConfig& c) {
  std::vector<const DatasetSpec*> ordered;
  if (r.has("strategy.order")) {
    const Tree* order = r.find("strategy.order");
    if (!order->is_array()) {
      r.error("strategy.order", "expected a list of dataset names");
    } else {
      for (std::size_t i = 0; i < order->size(); ++i) {
        std::string p = "strategy.order[" + std::to_string(i) + "]";
        std::string n = r.str(p, "");
        if (!has_dataset(c, n))
          r.error(p, "unknown dataset \"" + n + "\"");
        else if (std::any_of(ordered.begin(), ordered.end(),
                             [&](const DatasetSpec* o) { return o->name == n; }))
          r.error(p, "dataset \"" + n + "\" is already in the order; name each dataset once");
        else
          ordered.push_back(&c.dataset(n));
      }
      for (const auto& d : c.datasets)
        if (std::none_of(ordered.begin(), ordered.end(),
                         [&](const DatasetSpec* o) { return o->name == d.name; }))
          r.error("strategy.order", "dataset \"" + d.name + "\" is missing from the order");
    }
  } else {
    for (const auto& d : c.datasets) ordered.push_back(&d);
  }
  return ordered;
}

// The preset's stages, in order, over the ordered datasets.
void preset_stages(Reader& r, RunConfig& c, const std::string& name, std::optional<Strategy> preset,
                   const std::vector<const DatasetSpec*>& ordered) {
  std::vector<const DatasetSpec*> specialised, general;
  for (const auto* d : ordered) (d->is_general() ? general : specialised).push_back(d);

  if (preset == Strategy::kMultiTask) {
    c.strategy = Strategy::kMultiTask;
    StageSpec s = default_stage(c, "multi_task");
    for (const auto* d : ordered) s.sources.push_back({d->name, 1.0, false});
    c.stages.push_back(std::move(s));
  } else if (preset == Strategy::kSequential) {
    c.strategy = Strategy::kSequential;
    for (const auto* d : ordered) {
      StageSpec s = default_stage(c, d->name);
      s.sources.push_back({d->name, 1.0, false});
      c.stages.push_back(std::move(s));
    }
  } else {
    c.strategy = preset == Strategy::kDmt ? Strategy::kDmt : Strategy::kMixedSequential;
    if (specialised.empty())
      r.error("strategy.name", name + " needs at least one dataset whose ability is not \"general\"");
    if (general.empty()) r.error("strategy.name", name + " needs at least one dataset with ability: general");
    StageSpec s1 = default_stage(c, "specialised");
    for (const auto* d : specialised) s1.sources.push_back({d->name, 1.0, false});
    StageSpec s2 = default_stage(c, "general");
    for (const auto* d : general) s2.sources.push_back({d->name, 1.0, false});
    if (c.strategy == Strategy::kDmt) {
      c.k = r.num("strategy.k", 1.0 / 256, 0.0, 1.0, kFraction);
      if (c.k > 0)
        for (const auto* d : specialised) s2.sources.push_back({d->name, c.k, true});
    } else if (r.has("strategy.k")) {
      r.error("strategy.k", "k (the replay fraction) only applies to strategy dmt");
    }
    c.stages.push_back(std::move(s1));
    c.stages.push_back(std::move(s2));
  }
}

// Per-stage overrides: strategy.stage_overrides.<stage name>.{epochs, lr, ...}
void read_stage_overrides(Reader& r, RunConfig& c) {
  if (r.has("strategy.stage_overrides")) {
    const Tree* o = r.find("strategy.stage_overrides");
    if (!o->is_object()) {
      r.error("strategy.stage_overrides", "expected a map of stage name -> {epochs, lr, schedule, ...}");
    } else {
      for (auto it = o->begin(); it != o->end(); ++it) {
        auto st = std::find_if(c.stages.begin(), c.stages.end(),
                               [&](const StageSpec& s) { return s.name == it.key(); });
        std::string p = "strategy.stage_overrides." + it.key();
        if (st == c.stages.end()) {
          std::string names;
          for (const auto& s : c.stages) names += (names.empty() ? "" : ", ") + s.name;
          r.error(p, "no stage named \"" + it.key() + "\" (this strategy's stages: " + names + ")");
          continue;
        }
        r.check_keys(p, keys(stage_hparam_fields()));
        read_fields<StageHparams>(r, p, stage_hparam_fields(), *st);
      }
    }
  }
}

}  // namespace

std::vector<std::string> strategy_presets() {
  std::vector<std::string> presets;
  for (const auto& c : Choices<Strategy>::all)
    if (c.value != Strategy::kCustom) presets.emplace_back(c.name);
  return presets;
}

void expand_strategy(Reader& r, RunConfig& c) {
  const std::vector<std::string> presets = strategy_presets();
  const std::string name = r.str("strategy.name", "", presets);
  const std::optional<Strategy> preset = parse_choice<Strategy>(name);
  if (name.empty()) {
    std::string list;
    for (const auto& p : presets) list += (list.empty() ? "" : ", ") + p;
    r.error("strategy.name", "missing: one of " + list);
    return;
  }
  // A name not in `presets` is reported by r.str; planned as mixed_sequential, as before.
  preset_stages(r, c, name, preset, strategy_order(r, c));
  if (c.strategy != Strategy::kDmt && r.has("strategy.k") && preset != Strategy::kMixedSequential)
    r.error("strategy.k", "k (the replay fraction) only applies to strategy dmt");
  read_stage_overrides(r, c);
}

void read_explicit_stages(Reader& r, RunConfig& c) {
  const Tree* st = r.find("stages");
  if (!st->is_array() || st->empty()) {
    r.error("stages", "expected a non-empty list of stages");
    return;
  }
  c.strategy = Strategy::kCustom;
  std::set<std::string> seen_names;
  std::vector<std::string> earlier;  // datasets used by earlier stages, in order
  for (std::size_t i = 0; i < st->size(); ++i) {
    std::string p = "stages[" + std::to_string(i) + "]";
    std::vector<std::string> allowed = {"name", "sources", "replay_fraction"};
    for (const auto& k : keys(stage_hparam_fields())) allowed.push_back(k);
    r.check_keys(p, allowed);
    StageSpec s = default_stage(c, "");
    s.name = r.str(p + ".name", "stage" + std::to_string(i + 1));
    // A stage's model is exported to output_dir/stage<N>_<name>: the name must not leave that folder.
    if (!valid_name(s.name))
      r.error(p + ".name", "stage names may use letters, digits, '_' and '-' only");
    else if (!seen_names.insert(s.name).second)
      r.error(p + ".name", "duplicate stage name \"" + s.name + "\"");
    read_fields<StageHparams>(r, p, stage_hparam_fields(), s);
    const Tree* src = r.find(p + ".sources");
    if (!src || !src->is_object() || src->empty()) {
      r.error(p + ".sources", "missing: a map of dataset name -> fraction");
    } else {
      for (auto it = src->begin(); it != src->end(); ++it) {
        std::string sp = p + ".sources." + it.key();
        if (!has_dataset(c, it.key())) {
          r.error(sp, "unknown dataset \"" + it.key() + "\" (not under datasets:)");
          continue;
        }
        double share;  // StageSource::share, written `fraction` in YAML
        if (it.value().is_object()) {
          r.check_keys(sp, {"fraction"});
          share = r.num(sp + ".fraction", 1.0, 0.0, 1.0, kOpenLow | kFraction);
        } else {
          share = r.num(sp, 1.0, 0.0, 1.0, kOpenLow | kFraction);
        }
        s.sources.push_back({it.key(), share, false});
      }
    }
    if (r.has(p + ".replay_fraction")) {
      double k = r.num(p + ".replay_fraction", 0.0, 0.0, 1.0, kFraction);
      if (i == 0) r.error(p + ".replay_fraction", "the first stage has no earlier data to replay");
      if (k > 0)
        for (const auto& d : earlier)
          if (std::none_of(s.sources.begin(), s.sources.end(),
                           [&](const StageSource& x) { return x.dataset == d; }))
            s.sources.push_back({d, k, true});
      c.k = k;
    }
    for (const auto& x : s.sources)
      if (!x.replay && std::find(earlier.begin(), earlier.end(), x.dataset) == earlier.end())
        earlier.push_back(x.dataset);
    c.stages.push_back(std::move(s));
  }
}

}  // namespace sft::config
