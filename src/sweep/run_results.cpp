#include "run_results.h"

#include <nlohmann/json.hpp>

#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft::sweep {

RunResult read_run(const SweepRun& run) {
  RunResult r;
  r.run = &run;
  const std::string summary = fs::join(run.dir, "eval/summary.json");
  if (fs::exists(summary)) {
    auto j = nlohmann::json::parse(fs::read_file(summary));
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!it.value().is_object()) continue;
      if (it.value().contains("score") && it.value()["score"].is_number())
        r.scores[it.key()] = it.value()["score"].get<double>();
      for (auto f = it.value().begin(); f != it.value().end(); ++f)
        if (f.value().is_number()) r.metrics[it.key()][f.key()] = f.value().get<double>();
    }
  }
  const std::string cfg_path = fs::join(run.dir, "config.resolved.json"),
                    man_path = fs::join(run.dir, "data_manifest.json");
  if (!fs::exists(cfg_path) || !fs::exists(man_path)) return r;
  const auto cfg = nlohmann::json::parse(fs::read_file(cfg_path))["config"];
  const auto man = nlohmann::json::parse(fs::read_file(man_path));
  const std::string strategy = cfg["strategy"].value("name", "");
  r.strategy = config::parse_choice<config::Strategy>(strategy);
  if (!r.strategy)
    throw ConfigError(cfg_path + ": config.strategy.name: \"" + strategy + "\" is not a strategy (" +
                      config::choice_list<config::Strategy>() + ")");
  r.k = cfg["strategy"].value("k", 0.0);
  r.seed = cfg.value("seed", 0LL);
  std::map<std::string, std::set<std::string>> ids;  // ability -> record ids (a replayed record counts once)
  for (const auto& st : man["stages"]) {
    r.stage_abilities.emplace_back();
    for (const auto& src : st["sources"]) {
      const std::string ds = src["dataset"];
      const std::string ability = cfg["datasets"][ds].value("ability", ds);
      r.stage_abilities.back().insert(ability);
      for (const auto& id : src["records"]) ids[ability].insert(ds + "/" + id.get<std::string>());
    }
  }
  for (const auto& [ability, set] : ids) r.amounts[ability] = static_cast<double>(set.size());
  return r;
}

}  // namespace sft::sweep
