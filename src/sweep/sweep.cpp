// Sweep files: loading and checking them, expanding the grid into runs (each identified by
// the hash of its resolved config), writing the runs' configs, and describing the plan.
#include "sft/sweep/sweep.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <set>

#include "sft/config/run_config.h"
#include "sft/config/yaml_file.h"
#include "sft/train/dry_run.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"

namespace sft::sweep {
namespace {

using config::YamlValue;

std::string sanitize(const std::string& v) {
  std::string out;
  for (char c : v)
    out.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' ? c : '_');
  return out;
}

std::string short_key(const std::string& key) {
  auto dot = key.rfind('.');
  std::string last = dot == std::string::npos ? key : key.substr(dot + 1);
  if (last == "fraction" || last == "k") {
    // datasets.math.fraction -> math.fraction, strategy.k -> k
    if (key.rfind("datasets.", 0) == 0) return key.substr(9);
    return last;
  }
  return last;
}

std::string config_text(const std::string& base, const std::vector<std::string>& overrides) {
  return config::apply_overrides_to_text(fs::read_file(base), overrides);
}

std::string stem_of(const std::string& path) {
  std::string stem = fs::basename(path);
  if (auto dot = stem.find('.'); dot != std::string::npos) stem = stem.substr(0, dot);
  return stem;
}

// Collects every problem of a sweep file, each as "file:line: key: what is wrong".
struct Problems {
  std::string path, text;
  void add(int line, const std::string& key, const std::string& msg) {
    text += "\n" + path + (line > 0 ? ":" + std::to_string(line) : "") + ": " + key + ": " + msg;
  }
  void at(const YamlValue& v, const std::string& key, const std::string& msg) { add(v.line, key, msg); }
};

void check_top_keys(const YamlValue& root, Problems& err) {
  for (const auto& item : root.items) {
    const std::string& k = item.key;
    if (k != "name" && k != "base" && k != "set" && k != "axes" && k != "output_dir" && k != "runs_dir" &&
        k != "description")
      err.add(item.key_line, k, "unknown key (expected name, base, set, axes, output_dir, runs_dir)");
  }
}

void read_name(const YamlValue& root, const std::string& path, SweepSpec& s, Problems& err) {
  std::string stem = fs::basename(path);
  if (auto dot = stem.rfind('.'); dot != std::string::npos) stem = stem.substr(0, dot);
  const YamlValue* name = root.get("name");
  s.name = name ? name->scalar : stem;
  // The name becomes a folder (runs/sweeps/<name>), a Slurm job name and a line of
  // sweep.sbatch: a '/', "..", a newline or a shell character there would escape them.
  if (s.name.empty() || s.name[0] == '.' || !std::all_of(s.name.begin(), s.name.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '_' || c == '-' || c == '.';
      }))
    err.at(name ? *name : root, "name",
           "\"" + s.name +
               "\": a sweep name may use letters, digits, '_', '-' and '.' only, and not start with '.'" +
               (name ? "" : " (it defaults to the file's name)"));
}

void read_base_and_set(const YamlValue& root, SweepSpec& s, Problems& err) {
  const YamlValue* axes = root.get("axes");
  const YamlValue* base = root.get("base");
  const bool base_axis = axes && axes->get("base");
  if (!base && !base_axis)
    err.at(root, "base", "missing: the base run config (or a `base` axis)");
  else if (base)
    s.base = base->scalar;
  if (!s.base.empty() && !fs::exists(s.base)) err.at(*base, "base", s.base + " not found");
  if (const YamlValue* set = root.get("set")) {
    if (set->kind != YamlValue::kMap)
      err.at(*set, "set", "expected a map of key.path: value");
    else
      for (const auto& item : set->items) s.set.push_back({item.key, item.text});
  }
}

void read_axes(const YamlValue& root, SweepSpec& s, Problems& err) {
  const YamlValue* axes = root.get("axes");
  if (!axes || axes->kind != YamlValue::kMap || axes->items.empty()) {
    err.at(axes ? *axes : root, "axes", "expected a map of key.path: [values]");
    return;
  }
  for (const auto& axis : axes->items) {
    const std::string& key = axis.key;
    std::vector<std::string> values;
    if (axis.kind == YamlValue::kList) {
      for (const auto& v : axis.items) values.push_back(v.text);
    } else {
      values.push_back(axis.text);
    }
    if (values.empty()) err.at(axis, "axes." + key, "no values");
    // Each run's folder and name are the sweep's to choose (runs_dir/<hash>): such an axis
    // would be dropped from every run's identity and plan one run.
    if (key == "output_dir" || key == "run_name")
      err.add(axis.key_line, "axes." + key,
              "a sweep chooses each run's " + key + " itself; sweep over settings of the run");
    if (key == "base")
      for (const auto& v : values)
        if (!fs::exists(v)) err.at(axis, "axes.base", v + " not found");
    s.axes.push_back({key, values});
  }
}

// Counted before anything is expanded: 8 axes of 10 values are 10^8 runs.
void check_grid_size(const YamlValue& root, const SweepSpec& s, Problems& err) {
  constexpr double kMaxRuns = 10000;
  double runs = 1;
  std::string sizes;
  for (const auto& [key, values] : s.axes) {
    runs *= static_cast<double>(values.size());
    sizes += (sizes.empty() ? "" : " x ") + std::to_string(values.size());
  }
  if (runs > kMaxRuns) {
    char count[32];
    std::snprintf(count, sizeof count, "%.0f", runs);
    const YamlValue* axes = root.get("axes");
    err.add(axes ? axes->line : 0, "axes",
            "the grid holds " + std::string(count) + " runs (" + sizes + "); a sweep runs at most " +
                std::to_string(static_cast<int>(kMaxRuns)) + ": split it into several sweeps");
  }
}

void read_folders(const YamlValue& root, SweepSpec& s, Problems& err) {
  const YamlValue* output_dir = root.get("output_dir");
  const YamlValue* runs_dir = root.get("runs_dir");
  s.output_dir = output_dir ? output_dir->scalar : "runs/sweeps/" + s.name;
  s.runs_dir = runs_dir ? runs_dir->scalar : fs::join(s.output_dir, "runs");
  for (const char* key : {"output_dir", "runs_dir"}) {  // written into sweep.sbatch's lines
    const std::string& v = std::string(key) == "output_dir" ? s.output_dir : s.runs_dir;
    const YamlValue* where = root.get(key);
    if (std::any_of(v.begin(), v.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; }))
      err.at(where ? *where : root, key, "holds a control character (a newline?); a folder name cannot");
  }
}

}  // namespace

SweepSpec load_sweep(const std::string& path, const std::vector<std::string>& overrides) {
  SweepSpec s;
  s.file = path;
  const YamlValue root = config::read_yaml_file(path, overrides);
  if (root.kind != YamlValue::kMap)
    throw ConfigError(path + ": a sweep file is a map (name, base, set, axes, output_dir)");
  Problems err{path, ""};
  check_top_keys(root, err);
  read_name(root, path, s, err);
  read_base_and_set(root, s, err);
  read_axes(root, s, err);
  check_grid_size(root, s, err);
  read_folders(root, s, err);
  if (!err.text.empty()) throw ConfigError(err.text.substr(1));
  return s;
}

std::vector<SweepRun> expand(const SweepSpec& spec) {
  std::vector<SweepRun> runs;
  std::set<std::string> seen;
  std::vector<std::size_t> idx(spec.axes.size(), 0);
  for (;;) {
    SweepRun r;
    r.base = spec.base;
    for (const auto& [k, v] : spec.set) r.overrides.push_back(k + "=" + v);
    std::string strategy;
    for (std::size_t a = 0; a < spec.axes.size(); ++a)
      if (spec.axes[a].first == "strategy" || spec.axes[a].first == "strategy.name")
        strategy = spec.axes[a].second[idx[a]];
    for (const auto& [k, v] : spec.set)
      if (k == "strategy" || k == "strategy.name") strategy = v;
    std::vector<std::string> name_parts;
    for (std::size_t a = 0; a < spec.axes.size(); ++a) {
      const auto& [key, values] = spec.axes[a];
      const std::string& v = values[idx[a]];
      // k is DMT's replay share: meaningless for the other strategies.
      if (key == "strategy.k" && !strategy.empty() &&
          config::parse_choice<config::Strategy>(strategy) != config::Strategy::kDmt)
        continue;
      r.values.push_back({key, v});
      if (key == "base") {  // the base config itself as an axis (e.g. one per model size)
        r.base = v;
        name_parts.push_back("base=" + sanitize(stem_of(v)));
        continue;
      }
      // "a,b,c" moves several keys together (e.g. every dataset's fraction).
      std::size_t start = 0;
      while (start <= key.size()) {
        std::size_t comma = key.find(',', start);
        std::string one = key.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!one.empty()) r.overrides.push_back(one + "=" + v);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
      name_parts.push_back(short_key(key.substr(0, key.find(','))) +
                           (key.find(',') != std::string::npos ? "s" : "") + "=" + sanitize(v));
    }
    for (const auto& p : name_parts) r.name += (r.name.empty() ? "" : ".") + p;
    // Identity: the resolved config minus where it is written.
    config::RunConfig cfg =
        config::parse_run_config(config_text(r.base, r.overrides), r.base + " [" + r.name + "]");
    r.gpus = cfg.dist.gpus;
    nlohmann::json j = cfg.to_json();
    j.erase("output_dir");
    j.erase("run_name");
    j.erase("config_file");
    r.hash = sha256_hex(j.dump()).substr(0, 12);
    r.dir = fs::join(spec.runs_dir, r.hash);
    r.config_path = fs::join(r.dir, "config.yaml");
    if (seen.insert(r.hash).second) runs.push_back(std::move(r));
    // Next grid point (last axis fastest).
    std::size_t a = spec.axes.size();
    while (a > 0) {
      --a;
      if (++idx[a] < spec.axes[a].second.size()) break;
      idx[a] = 0;
      if (a == 0) return runs;
    }
    if (spec.axes.empty()) return runs;
  }
}

void materialise(const SweepSpec& spec, const std::vector<SweepRun>& runs) {
  fs::make_dirs(spec.output_dir);
  std::string index;
  for (const auto& r : runs) {
    fs::make_dirs(r.dir);
    std::vector<std::string> ov = r.overrides;
    ov.push_back("output_dir=" + r.dir);
    ov.push_back("run_name=" + spec.name + "." + r.name);
    std::string text = "# sweep " + spec.name + " (" + spec.file + "), run " + r.name + "\n" +
                       "# generated from " + r.base + " with:" +
                       [&] {
                         std::string s;
                         for (const auto& o : r.overrides) s += " --set " + o;
                         return s;
                       }() +
                       "\n" + config_text(r.base, ov);
    if (!fs::exists(r.config_path) || fs::read_file(r.config_path) != text)
      fs::write_file_atomic(r.config_path, text);
    nlohmann::ordered_json line = {
        {"name", r.name}, {"hash", r.hash}, {"dir", r.dir}, {"config", r.config_path}};
    nlohmann::ordered_json vals = nlohmann::ordered_json::object();
    for (const auto& [k, v] : r.values) vals[k] = v;
    line["values"] = vals;
    index += line.dump() + "\n";
  }
  fs::write_file_atomic(fs::join(spec.output_dir, "runs.jsonl"), index);
}

// Whether the run evaluates its final model (eval.at_end or eval.at_stage_end, with benchmarks),
// from the config it recorded; unreadable counts as yes, so an unclear run is retrained, not skipped.
bool run_evaluates(const SweepRun& run) {
  try {
    const auto j = nlohmann::json::parse(fs::read_file(fs::join(run.dir, "config.resolved.json")));
    const auto& e = j.at("config").at("eval");
    return !e.at("benchmarks").empty() && (e.value("at_end", false) || e.value("at_stage_end", false));
  } catch (const std::exception&) {
    return true;
  }
}

bool run_finished(const SweepRun& run) {
  if (!fs::exists(fs::join(run.dir, "final/model.safetensors"))) return false;
  return fs::exists(fs::join(run.dir, "eval/summary.json")) || !run_evaluates(run);
}

nlohmann::ordered_json describe(const SweepSpec& spec, const std::vector<SweepRun>& runs) {
  nlohmann::ordered_json out = {
      {"sweep", spec.name}, {"file", spec.file}, {"base", spec.base}, {"runs", runs.size()}};
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  std::int64_t tokens = 0, steps = 0;
  for (const auto& r : runs) {
    config::RunConfig cfg =
        config::parse_run_config(config_text(r.base, r.overrides), r.base + " [" + r.name + "]");
    auto plan = train::dry_run(cfg, 1);
    std::int64_t run_tokens = 0;
    nlohmann::ordered_json stages = nlohmann::ordered_json::array();
    for (const auto& st : plan["stages"]) {
      std::int64_t t = st.contains("tokens") ? st["tokens"].get<std::int64_t>()
                                             : st["tokens_estimated"].get<std::int64_t>();
      run_tokens += t;
      stages.push_back({{"name", st["name"]},
                        {"samples", st["samples"]},
                        {"epochs", st["epochs"]},
                        {"tokens", t},
                        {"steps", st.contains("steps") ? st["steps"] : st["steps_estimated"]}});
    }
    tokens += run_tokens;
    steps += plan["total_steps"].get<std::int64_t>();
    nlohmann::ordered_json vals = nlohmann::ordered_json::object();
    for (const auto& [k, v] : r.values) vals[k] = v;
    list.push_back({{"name", r.name},
                    {"values", vals},
                    {"dir", r.dir},
                    {"finished", run_finished(r)},
                    {"stages", stages},
                    {"tokens", run_tokens},
                    {"steps", plan["total_steps"]}});
  }
  out["total_tokens"] = tokens;
  out["total_steps"] = steps;
  out["list"] = list;
  return out;
}

}  // namespace sft::sweep
