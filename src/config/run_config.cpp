#include "sft/config/run_config.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "config/yaml_tree.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft::config {
namespace {

std::string fmt_double(double v) {
  std::ostringstream s;
  s.precision(10);
  s << v;
  return s.str();
}

// Levenshtein distance, for "did you mean" hints on unknown keys.
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// Reads typed values out of a Document, collecting every problem and the provenance of
// every setting. Paths use the "a.b[1].c" notation of the messages.
class Reader {
 public:
  explicit Reader(Document& doc) : doc_(doc) {}

  const Tree* find(const std::string& path) const {
    const Tree* node = &doc_.root;
    for (const auto& p : split_key_path(path)) {
      if (node->is_object()) {
        if (!node->contains(p)) return nullptr;
        node = &(*node)[p];
      } else if (node->is_array()) {
        const std::size_t i = index_value(p);  // past the end when not an index
        if (i >= node->size()) return nullptr;
        node = &(*node)[i];
      } else {
        return nullptr;
      }
    }
    return node;
  }
  bool has(const std::string& path) const {
    const Tree* t = find(path);
    return t && !t->is_null();
  }

  std::string where(const std::string& path) const {
    if (is_overridden(path)) return "--set " + path;
    // Walk up to the nearest path with a known line.
    std::string p = path;
    while (!p.empty()) {
      auto it = doc_.lines.find(p);
      if (it != doc_.lines.end()) return doc_.file + ":" + std::to_string(it->second) + ": " + path;
      auto cut = p.find_last_of(".[");
      if (cut == std::string::npos) break;
      p = p.substr(0, cut);
    }
    // Not in the file: a --set made it (foo for --set foo.bar=1).
    for (const auto& o : doc_.overridden)
      if (o.rfind(path + ".", 0) == 0 || o.rfind(path + "[", 0) == 0) return "--set " + o + ": " + path;
    return doc_.file + ": " + path;
  }

  void error(const std::string& path, const std::string& msg) { errors_.push_back(where(path) + ": " + msg); }
  const std::vector<std::string>& errors() const { return errors_; }

  void record(const std::string& path, const std::string& value, bool present) {
    std::string source = "default";
    if (present) {
      if (is_overridden(path)) {
        source = "--set";
      } else {
        auto it = doc_.lines.find(path);
        source = it != doc_.lines.end() ? "file:" + std::to_string(it->second) : "file";
      }
    }
    settings_.push_back({path, value, source});
  }
  std::vector<Setting> take_settings() { return std::move(settings_); }

  std::string str(const std::string& path, const std::string& def, const std::vector<std::string>& choices = {}) {
    const Tree* t = find(path);
    if (!t || t->is_null()) {
      record(path, def, false);
      return def;
    }
    if (!t->is_string()) {
      error(path, "expected a string, got a " + std::string(t->is_array() ? "list" : "map"));
      return def;
    }
    std::string v = t->get<std::string>();
    if (!choices.empty() && std::find(choices.begin(), choices.end(), v) == choices.end()) {
      std::string list;
      for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
      error(path, "\"" + v + "\" is not one of: " + list);
    }
    record(path, v, true);
    return v;
  }

  std::optional<std::string> opt_str(const std::string& path) {
    if (!has(path)) return std::nullopt;
    return str(path, "");
  }

  // Numbers accept fractions ("1/256") when `fraction` is set. Bounds are inclusive unless
  // `open_low` (then low is excluded).
  double num(const std::string& path, double def, double low, double high, bool open_low = false,
             bool fraction = false) {
    const Tree* t = find(path);
    if (!t || t->is_null()) {
      record(path, fmt_double(def), false);
      return def;
    }
    if (!t->is_string()) {
      error(path, "expected a number");
      return def;
    }
    std::string text = t->get<std::string>();
    std::optional<double> v;
    if (fraction) {
      v = parse_fraction(text);
    } else {
      try {
        std::size_t used = 0;
        double d = std::stod(text, &used);
        if (used == text.size()) v = d;
      } catch (...) {
      }
    }
    if (!v || !std::isfinite(*v)) {
      error(path, "\"" + text + "\" is not a number" + std::string(fraction ? " or fraction like 1/256" : ""));
      return def;
    }
    bool below = open_low ? *v <= low : *v < low;
    if (below || *v > high) {
      std::string range = (open_low ? "(" : "[") + fmt_double(low) + ", " + fmt_double(high) + "]";
      if (high == HUGE_VAL) range = (open_low ? "> " : ">= ") + fmt_double(low);
      error(path, text + " is outside " + range);
      return def;
    }
    record(path, text, true);
    return *v;
  }

  std::int64_t integer(const std::string& path, std::int64_t def, std::int64_t low,
                       std::int64_t high = INT64_MAX) {
    const Tree* t = find(path);
    if (!t || t->is_null()) {
      record(path, std::to_string(def), false);
      return def;
    }
    std::string text = t->is_string() ? t->get<std::string>() : "";
    std::int64_t v = 0;
    try {
      std::size_t used = 0;
      v = std::stoll(text, &used);
      if (used != text.size()) throw 1;
    } catch (...) {
      error(path, "\"" + text + "\" is not an integer");
      return def;
    }
    if (v < low || v > high) {
      error(path, text + " is outside [" + std::to_string(low) + ", " +
                      (high == INT64_MAX ? std::string("inf") : std::to_string(high)) + "]");
      return def;
    }
    record(path, text, true);
    return v;
  }

  bool boolean(const std::string& path, bool def) {
    const Tree* t = find(path);
    if (!t || t->is_null()) {
      record(path, def ? "true" : "false", false);
      return def;
    }
    std::string s = t->is_string() ? t->get<std::string>() : "";
    static const std::set<std::string> yes = {"true", "True", "TRUE", "yes", "on", "1"};
    static const std::set<std::string> no = {"false", "False", "FALSE", "no", "off", "0"};
    if (yes.count(s)) {
      record(path, "true", true);
      return true;
    }
    if (no.count(s)) {
      record(path, "false", true);
      return false;
    }
    error(path, "\"" + s + "\" is not a boolean (true/false)");
    return def;
  }

  // Reports keys of the map at `path` that are not in `allowed`.
  void check_keys(const std::string& path, const std::vector<std::string>& allowed) {
    const Tree* t = path.empty() ? &doc_.root : find(path);
    if (!t || t->is_null()) return;
    if (!t->is_object()) {
      error(path, "expected a map");
      return;
    }
    for (auto it = t->begin(); it != t->end(); ++it) {
      const std::string& k = it.key();
      if (std::find(allowed.begin(), allowed.end(), k) != allowed.end()) continue;
      std::string hint;
      std::size_t best = 3;
      for (const auto& a : allowed) {
        std::size_t d = edit_distance(k, a);
        if (d < best) {
          best = d;
          hint = "; did you mean \"" + a + "\"?";
        }
      }
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      error(path.empty() ? k : path + "." + k, "unknown key" + (hint.empty() ? " (expected one of: " + list + ")" : hint));
    }
  }

  bool is_overridden(const std::string& path) const {
    for (const auto& o : doc_.overridden)
      if (path == o || path.rfind(o + ".", 0) == 0 || path.rfind(o + "[", 0) == 0) return true;
    return false;
  }

 private:
  Document& doc_;
  std::vector<std::string> errors_;
  std::vector<Setting> settings_;
};

const std::vector<std::string> kFormats = {"gsm8k", "alpaca", "sharegpt", "messages", "text", "mtbench"};
const std::vector<std::string> kTemplates = {"vicuna_v1.1", "llama-2", "chatml", "alpaca", "raw"};
const std::vector<std::string> kSchedules = {"cosine", "linear", "constant"};

bool valid_name(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '-';
  });
}

void read_stage_hparams(Reader& r, const std::string& path, const TrainSpec& t, StageSpec& s) {
  s.epochs = static_cast<int>(r.integer(path + ".epochs", t.epochs, 1, 1000));
  s.lr = r.num(path + ".lr", t.lr, 0.0, 10.0, /*open_low=*/true);
  s.min_lr_ratio = r.num(path + ".min_lr_ratio", t.min_lr_ratio, 0.0, 1.0);
  s.schedule = r.str(path + ".schedule", t.schedule, kSchedules);
  s.warmup_ratio = r.num(path + ".warmup_ratio", t.warmup_ratio, 0.0, 1.0);
  s.warmup_steps = r.integer(path + ".warmup_steps", t.warmup_steps, -1);
}

const std::vector<std::string> kStageHparamKeys = {"epochs", "lr", "min_lr_ratio", "schedule", "warmup_ratio",
                                                   "warmup_steps"};

void read_train(Reader& r, TrainSpec& t) {
  r.check_keys("train", {"epochs", "lr", "min_lr_ratio", "schedule", "warmup_ratio", "warmup_steps", "batch_size",
                         "grad_accum", "samples_per_step", "tokens_per_micro_batch", "rows_per_step", "max_grad_norm", "weight_decay", "adam_beta1", "adam_beta2", "adam_eps",
                         "precision", "activation_checkpointing", "log_every", "save_every", "keep_checkpoints",
                         "max_nonfinite_steps", "threads", "device", "max_steps",
                         "reset_optimizer_between_stages", "export_stage_models"});
  t.epochs = static_cast<int>(r.integer("train.epochs", t.epochs, 1, 1000));
  t.lr = r.num("train.lr", t.lr, 0.0, 10.0, true);
  t.min_lr_ratio = r.num("train.min_lr_ratio", t.min_lr_ratio, 0.0, 1.0);
  t.schedule = r.str("train.schedule", t.schedule, kSchedules);
  t.warmup_ratio = r.num("train.warmup_ratio", t.warmup_ratio, 0.0, 1.0);
  t.warmup_steps = r.integer("train.warmup_steps", t.warmup_steps, -1);
  t.batch_size = r.integer("train.batch_size", t.batch_size, 1);
  t.grad_accum = r.integer("train.grad_accum", t.grad_accum, 1);
  t.samples_per_step = r.integer("train.samples_per_step", t.samples_per_step, 0);
  t.tokens_per_micro_batch = r.integer("train.tokens_per_micro_batch", t.tokens_per_micro_batch, 0);
  // grad_accum: 1 (the default) imposes nothing; any other value states the batch in rows.
  if (t.samples_per_step > 0 && t.grad_accum != 1)
    r.error("train.samples_per_step",
            "exclusive with train.grad_accum: a step of samples_per_step samples takes as many micro-batches as they "
            "need; give one of the two (the global batch in samples, or in rows of batch_size x grad_accum x ranks)");
  t.rows_per_step = r.integer("train.rows_per_step", t.rows_per_step, 0);
  if (t.rows_per_step > 0 && t.samples_per_step > 0)
    r.error("train.rows_per_step", "exclusive with train.samples_per_step: state the global batch in rows or in samples");
  else if (t.rows_per_step > 0 && t.grad_accum != 1)
    r.error("train.rows_per_step", "exclusive with train.grad_accum: the accumulation is derived from the world size "
                                   "(rows_per_step / (batch_size x ranks))");
  else if (t.rows_per_step > 0 && t.rows_per_step % t.batch_size != 0)
    r.error("train.rows_per_step", std::to_string(t.rows_per_step) + " is not a multiple of train.batch_size (" +
                                       std::to_string(t.batch_size) + ")");
  if (t.tokens_per_micro_batch > 0 && t.samples_per_step == 0)
    r.error("train.tokens_per_micro_batch", "only applies with train.samples_per_step (rows per micro-batch are train.batch_size)");
  t.max_grad_norm = r.num("train.max_grad_norm", t.max_grad_norm, 0.0, HUGE_VAL);
  t.weight_decay = r.num("train.weight_decay", t.weight_decay, 0.0, 10.0);
  t.adam_beta1 = r.num("train.adam_beta1", t.adam_beta1, 0.0, 1.0);
  t.adam_beta2 = r.num("train.adam_beta2", t.adam_beta2, 0.0, 1.0);
  t.adam_eps = r.num("train.adam_eps", t.adam_eps, 0.0, 1.0, true);
  t.precision = r.str("train.precision", t.precision, {"fp32", "bf16", "bf16-pure"});
  t.activation_checkpointing = r.boolean("train.activation_checkpointing", t.activation_checkpointing);
  t.log_every = r.integer("train.log_every", t.log_every, 1);
  t.save_every = r.integer("train.save_every", t.save_every, 0);
  t.keep_checkpoints = r.integer("train.keep_checkpoints", t.keep_checkpoints, 1);
  t.max_nonfinite_steps = r.integer("train.max_nonfinite_steps", t.max_nonfinite_steps, 1);
  t.threads = static_cast<int>(r.integer("train.threads", t.threads, 0, 4096));
  t.device = r.str("train.device", t.device);
  if (t.device != "auto" && t.device != "cpu" && t.device.rfind("cuda", 0) != 0)
    r.error("train.device", "\"" + t.device + "\" is not one of: auto, cpu, cuda, cuda:N");
  t.max_steps = r.integer("train.max_steps", t.max_steps, 0);
  t.reset_optimizer_between_stages = r.boolean("train.reset_optimizer_between_stages", t.reset_optimizer_between_stages);
  t.export_stage_models = r.boolean("train.export_stage_models", t.export_stage_models);
}

void read_datasets(Reader& r, RunConfig& c) {
  const Tree* ds = r.find("datasets");
  if (!ds || ds->is_null() || (ds->is_object() && ds->empty())) {
    r.error("datasets", "missing: name at least one dataset (name: {path, format, ability})");
    return;
  }
  if (!ds->is_object()) {
    r.error("datasets", "expected a map of dataset name -> {path, format, ability}");
    return;
  }
  for (auto it = ds->begin(); it != ds->end(); ++it) {
    std::string p = "datasets." + it.key();
    DatasetSpec d;
    d.name = it.key();
    if (!valid_name(d.name)) r.error(p, "dataset names may use letters, digits, '_' and '-' only");
    if (!it.value().is_object()) {
      r.error(p, "expected a map {path, format, ability}");
      continue;
    }
    r.check_keys(p, {"path", "format", "ability", "fraction", "strip_calculator", "filter", "text_field", "size",
                     "system_message", "repeat"});
    d.path = r.str(p + ".path", "");
    if (d.path.empty()) r.error(p + ".path", "missing: the dataset file");
    d.format = r.str(p + ".format", "", kFormats);
    if (d.format.empty()) r.error(p + ".format", "missing: one of gsm8k, alpaca, sharegpt, messages, text, mtbench");
    d.ability = r.str(p + ".ability", d.name);
    d.fraction = r.num(p + ".fraction", 1.0, 0.0, 1.0, /*open_low=*/true, /*fraction=*/true);
    d.strip_calculator = r.boolean(p + ".strip_calculator", false);
    if (r.has(p + ".filter")) {
      r.check_keys(p + ".filter", {"field", "equals"});
      d.filter_field = r.str(p + ".filter.field", "");
      if (d.filter_field.empty()) r.error(p + ".filter.field", "missing: the record field to test");
      const Tree* eq = r.find(p + ".filter.equals");
      if (!eq || eq->is_null()) {
        r.error(p + ".filter.equals", "missing: the value to keep (e.g. true)");
      } else {
        // Scalars keep their YAML text; interpret the usual JSON literals.
        std::string s = eq->is_string() ? eq->get<std::string>() : eq->dump();
        if (s == "true" || s == "false") d.filter_equals = (s == "true");
        else {
          try {
            std::size_t used = 0;
            double v = std::stod(s, &used);
            d.filter_equals = used == s.size() ? nlohmann::json(v) : nlohmann::json(s);
          } catch (...) {
            d.filter_equals = s;
          }
        }
        r.record(p + ".filter.equals", s, true);
      }
    }
    d.text_field = r.str(p + ".text_field", "text");
    d.size = r.integer(p + ".size", -1, -1);
    d.repeat = static_cast<int>(r.integer(p + ".repeat", 1, 1, 1000));
    d.system_message = r.opt_str(p + ".system_message");
    c.datasets.push_back(std::move(d));
  }
}

bool has_dataset(const RunConfig& c, const std::string& name) {
  return std::any_of(c.datasets.begin(), c.datasets.end(), [&](const DatasetSpec& d) { return d.name == name; });
}

StageSpec default_stage(const RunConfig& c, const std::string& name) {
  StageSpec s;
  s.name = name;
  s.epochs = c.train.epochs;
  s.lr = c.train.lr;
  s.min_lr_ratio = c.train.min_lr_ratio;
  s.schedule = c.train.schedule;
  s.warmup_ratio = c.train.warmup_ratio;
  s.warmup_steps = c.train.warmup_steps;
  return s;
}

void expand_strategy(Reader& r, RunConfig& c) {
  const std::string name = r.str("strategy.name", "", {"multi_task", "sequential", "mixed_sequential", "dmt"});
  if (name.empty()) {
    r.error("strategy.name", "missing: one of multi_task, sequential, mixed_sequential, dmt");
    return;
  }
  std::vector<const DatasetSpec*> ordered;
  if (r.has("strategy.order")) {
    const Tree* order = r.find("strategy.order");
    if (!order->is_array()) {
      r.error("strategy.order", "expected a list of dataset names");
    } else {
      for (std::size_t i = 0; i < order->size(); ++i) {
        std::string p = "strategy.order[" + std::to_string(i) + "]";
        std::string n = r.str(p, "");
        if (!has_dataset(c, n)) r.error(p, "unknown dataset \"" + n + "\"");
        else if (std::any_of(ordered.begin(), ordered.end(), [&](const DatasetSpec* o) { return o->name == n; }))
          r.error(p, "dataset \"" + n + "\" is already in the order; name each dataset once");
        else ordered.push_back(&c.dataset(n));
      }
      for (const auto& d : c.datasets)
        if (std::none_of(ordered.begin(), ordered.end(), [&](const DatasetSpec* o) { return o->name == d.name; }))
          r.error("strategy.order", "dataset \"" + d.name + "\" is missing from the order");
    }
  } else {
    for (const auto& d : c.datasets) ordered.push_back(&d);
  }
  std::vector<const DatasetSpec*> specialised, general;
  for (const auto* d : ordered) (d->is_general() ? general : specialised).push_back(d);

  if (name == "multi_task") {
    c.strategy = Strategy::kMultiTask;
    StageSpec s = default_stage(c, "multi_task");
    for (const auto* d : ordered) s.sources.push_back({d->name, 1.0, false});
    c.stages.push_back(std::move(s));
  } else if (name == "sequential") {
    c.strategy = Strategy::kSequential;
    for (const auto* d : ordered) {
      StageSpec s = default_stage(c, d->name);
      s.sources.push_back({d->name, 1.0, false});
      c.stages.push_back(std::move(s));
    }
  } else {
    c.strategy = name == "dmt" ? Strategy::kDmt : Strategy::kMixedSequential;
    if (specialised.empty()) r.error("strategy.name", name + " needs at least one dataset whose ability is not \"general\"");
    if (general.empty()) r.error("strategy.name", name + " needs at least one dataset with ability: general");
    StageSpec s1 = default_stage(c, "specialised");
    for (const auto* d : specialised) s1.sources.push_back({d->name, 1.0, false});
    StageSpec s2 = default_stage(c, "general");
    for (const auto* d : general) s2.sources.push_back({d->name, 1.0, false});
    if (c.strategy == Strategy::kDmt) {
      c.k = r.num("strategy.k", 1.0 / 256, 0.0, 1.0, false, /*fraction=*/true);
      if (c.k > 0)
        for (const auto* d : specialised) s2.sources.push_back({d->name, c.k, true});
    } else if (r.has("strategy.k")) {
      r.error("strategy.k", "k (the replay fraction) only applies to strategy dmt");
    }
    c.stages.push_back(std::move(s1));
    c.stages.push_back(std::move(s2));
  }
  if (c.strategy != Strategy::kDmt && r.has("strategy.k") && name != "mixed_sequential")
    r.error("strategy.k", "k (the replay fraction) only applies to strategy dmt");

  // Per-stage overrides: strategy.stage_overrides.<stage name>.{epochs, lr, ...}
  if (r.has("strategy.stage_overrides")) {
    const Tree* o = r.find("strategy.stage_overrides");
    if (!o->is_object()) {
      r.error("strategy.stage_overrides", "expected a map of stage name -> {epochs, lr, schedule, ...}");
    } else {
      for (auto it = o->begin(); it != o->end(); ++it) {
        auto st = std::find_if(c.stages.begin(), c.stages.end(), [&](const StageSpec& s) { return s.name == it.key(); });
        std::string p = "strategy.stage_overrides." + it.key();
        if (st == c.stages.end()) {
          std::string names;
          for (const auto& s : c.stages) names += (names.empty() ? "" : ", ") + s.name;
          r.error(p, "no stage named \"" + it.key() + "\" (this strategy's stages: " + names + ")");
          continue;
        }
        r.check_keys(p, kStageHparamKeys);
        read_stage_hparams(r, p, c.train, *st);
      }
    }
  }
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
    r.check_keys(p, {"name", "sources", "replay_fraction", "epochs", "lr", "min_lr_ratio", "schedule",
                     "warmup_ratio", "warmup_steps"});
    StageSpec s = default_stage(c, "");
    s.name = r.str(p + ".name", "stage" + std::to_string(i + 1));
    if (!seen_names.insert(s.name).second) r.error(p + ".name", "duplicate stage name \"" + s.name + "\"");
    read_stage_hparams(r, p, c.train, s);
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
        double f;
        if (it.value().is_object()) {
          r.check_keys(sp, {"fraction"});
          f = r.num(sp + ".fraction", 1.0, 0.0, 1.0, true, true);
        } else {
          f = r.num(sp, 1.0, 0.0, 1.0, true, true);
        }
        s.sources.push_back({it.key(), f, false});
      }
    }
    if (r.has(p + ".replay_fraction")) {
      double k = r.num(p + ".replay_fraction", 0.0, 0.0, 1.0, false, true);
      if (i == 0) r.error(p + ".replay_fraction", "the first stage has no earlier data to replay");
      if (k > 0)
        for (const auto& d : earlier)
          if (std::none_of(s.sources.begin(), s.sources.end(), [&](const StageSource& x) { return x.dataset == d; }))
            s.sources.push_back({d, k, true});
      c.k = k;
    }
    for (const auto& x : s.sources)
      if (!x.replay && std::find(earlier.begin(), earlier.end(), x.dataset) == earlier.end()) earlier.push_back(x.dataset);
    c.stages.push_back(std::move(s));
  }
}

RunConfig resolve(Document& doc) {
  Reader r(doc);
  RunConfig c;
  c.source_file = doc.file;
  r.check_keys("", {"description", "run_name", "seed", "output_dir", "model", "tokenizer", "template", "data",
                    "datasets", "strategy", "stages", "train", "dist", "eval"});
  std::string stem = fs::basename(doc.file);
  if (auto dot = stem.rfind('.'); dot != std::string::npos) stem = stem.substr(0, dot);
  c.run_name = r.str("run_name", stem.empty() ? "run" : stem);
  c.seed = static_cast<std::uint64_t>(r.integer("seed", 1, 0));
  c.output_dir = r.str("output_dir", "runs/" + c.run_name);

  r.check_keys("model", {"path", "init", "config", "save_dtype"});
  c.model.path = r.str("model.path", "");
  c.model.init = r.str("model.init", "auto", {"auto", "random", "pretrained"});
  c.model.save_dtype = r.str("model.save_dtype", "fp32", {"fp32", "bf16", "f16"});
  if (const Tree* mc = r.find("model.config"); mc && !mc->is_null()) {
    if (!mc->is_object()) {
      r.error("model.config", "expected a map of config.json fields");
    } else {
      // Scalars keep YAML text; convert numbers/bools so the model module sees JSON types.
      for (auto it = mc->begin(); it != mc->end(); ++it) {
        std::string p = "model.config." + it.key();
        const Tree& v = it.value();
        if (v.is_string()) {
          std::string s = v.get<std::string>();
          nlohmann::json j;
          try {
            j = nlohmann::json::parse(s);
          } catch (...) {
            j = s;
          }
          c.model.config[it.key()] = j;
          r.record(p, s, true);
        } else if (v.is_null()) {
          c.model.config[it.key()] = nullptr;
        } else {
          // Nested maps (rope_scaling): convert their scalars the same way.
          std::function<nlohmann::json(const Tree&)> conv = [&](const Tree& t) -> nlohmann::json {
            if (t.is_string()) {
              try {
                return nlohmann::json::parse(t.get<std::string>());
              } catch (...) {
                return t.get<std::string>();
              }
            }
            if (t.is_object()) {
              nlohmann::json o = nlohmann::json::object();
              for (auto jt = t.begin(); jt != t.end(); ++jt) o[jt.key()] = conv(jt.value());
              return o;
            }
            if (t.is_array()) {
              nlohmann::json a = nlohmann::json::array();
              for (const auto& x : t) a.push_back(conv(x));
              return a;
            }
            return nullptr;
          };
          c.model.config[it.key()] = conv(v);
          r.record(p, c.model.config[it.key()].dump(), true);
        }
      }
    }
  }
  if (c.model.path.empty() && c.model.config.is_null())
    r.error("model", "missing: model.path (a Hugging Face folder) or model.config (config.json fields)");
  if (c.model.init == "pretrained" && c.model.path.empty())
    r.error("model.init", "pretrained needs model.path");

  r.check_keys("tokenizer", {"path"});
  std::string default_tok = c.model.path.empty() ? "" : fs::join(c.model.path, "tokenizer.model");
  c.tokenizer = r.str("tokenizer.path", default_tok);
  if (c.tokenizer.empty()) r.error("tokenizer", "missing: a sentencepiece tokenizer.model path");

  r.check_keys("template", {"name", "system_message"});
  c.template_name = r.str("template.name", "vicuna_v1.1", kTemplates);
  c.system_message = r.opt_str("template.system_message");

  r.check_keys("data", {"max_seq_len", "truncation", "on_bad_record", "max_record_bytes", "batching", "pack_window", "group_by_length",
                        "shuffle", "cache_dir"});
  c.data.max_seq_len = r.integer("data.max_seq_len", c.data.max_seq_len, 8, 1 << 22);
  c.data.truncation = r.str("data.truncation", c.data.truncation, {"truncate", "drop"});
  c.data.on_bad_record = r.str("data.on_bad_record", c.data.on_bad_record, {"error", "skip"});
  c.data.max_record_bytes = r.integer("data.max_record_bytes", c.data.max_record_bytes, 1, std::int64_t{1} << 40);
  c.data.batching = r.str("data.batching", c.data.batching, {"pack", "pad", "pad_max"});
  c.data.pack_window = r.integer("data.pack_window", c.data.pack_window, 1);
  c.data.group_by_length = r.boolean("data.group_by_length", c.data.group_by_length);
  c.data.shuffle = r.boolean("data.shuffle", c.data.shuffle);
  c.data.cache_dir = r.str("data.cache_dir", c.data.cache_dir);

  read_train(r, c.train);
  read_datasets(r, c);

  r.check_keys("dist", {"strategy", "backend", "timeout_s", "bucket_mb", "gpus", "gpu_type"});
  c.dist.strategy = r.str("dist.strategy", c.dist.strategy, {"ddp", "zero1", "zero2", "zero3"});
  c.dist.backend = r.str("dist.backend", c.dist.backend, {"auto", "gloo", "nccl"});
  c.dist.timeout_s = static_cast<int>(r.integer("dist.timeout_s", c.dist.timeout_s, 1, 86400));
  c.dist.bucket_mb = r.num("dist.bucket_mb", c.dist.bucket_mb, 0.0, 1e6, true);
  c.dist.gpus = static_cast<int>(r.integer("dist.gpus", 0, 0, 1 << 20));
  c.dist.gpu_type = r.str("dist.gpu_type", "");

  r.check_keys("eval", {"at_stage_end", "at_end", "benchmarks", "max_new_tokens", "batch_size"});
  c.eval.at_stage_end = r.boolean("eval.at_stage_end", false);
  c.eval.at_end = r.boolean("eval.at_end", false);
  c.eval.max_new_tokens = r.integer("eval.max_new_tokens", c.eval.max_new_tokens, 1);
  c.eval.batch_size = r.integer("eval.batch_size", c.eval.batch_size, 1);
  if (const Tree* b = r.find("eval.benchmarks"); b && !b->is_null()) {
    if (!b->is_array()) {
      r.error("eval.benchmarks", "expected a list of {name, data, limit}");
    } else {
      for (std::size_t i = 0; i < b->size(); ++i) {
        std::string p = "eval.benchmarks[" + std::to_string(i) + "]";
        EvalBenchmark e;
        if ((*b)[i].is_string()) {
          e.name = r.str(p, "");
        } else {
          r.check_keys(p, {"name", "data", "limit"});
          e.name = r.str(p + ".name", "");
          e.data = r.str(p + ".data", "");
          e.limit = r.integer(p + ".limit", 0, 0);
        }
        if (e.name.empty()) r.error(p, "missing: the benchmark name");
        c.eval.benchmarks.push_back(e);
      }
    }
  }

  // Strategy preset or explicit stages: exactly one of the two.
  bool has_strategy = r.has("strategy");
  bool has_stages = r.has("stages");
  if (has_strategy && has_stages) {
    r.error("stages", "give either `strategy` (a preset) or `stages` (explicit), not both");
  } else if (has_strategy) {
    r.check_keys("strategy", {"name", "k", "order", "stage_overrides"});
    if (c.datasets.size() > 0) expand_strategy(r, c);
  } else if (has_stages) {
    if (c.datasets.size() > 0) read_explicit_stages(r, c);
  } else {
    r.error("strategy", "missing: a strategy (multi_task, sequential, mixed_sequential, dmt) or explicit stages");
  }

  if (!r.errors().empty()) {
    // Report in file order: "file:line: ..." sorted by line, --set problems last.
    std::vector<std::string> errs = r.errors();
    auto line_of = [&](const std::string& e) -> long {
      if (e.rfind(doc.file + ":", 0) != 0) return LONG_MAX;
      try {
        return std::stol(e.substr(doc.file.size() + 1));
      } catch (...) {
        return LONG_MAX - 1;
      }
    };
    std::stable_sort(errs.begin(), errs.end(),
                     [&](const std::string& a, const std::string& b) { return line_of(a) < line_of(b); });
    std::string msg;
    for (const auto& e : errs) msg += (msg.empty() ? "" : "\n") + e;
    if (errs.size() > 1)
      msg = std::to_string(r.errors().size()) + " problems in the run configuration:\n" + msg;
    throw ConfigError(msg);
  }
  c.settings = r.take_settings();
  return c;
}

}  // namespace

const char* strategy_name(Strategy s) {
  switch (s) {
    case Strategy::kMultiTask: return "multi_task";
    case Strategy::kSequential: return "sequential";
    case Strategy::kMixedSequential: return "mixed_sequential";
    case Strategy::kDmt: return "dmt";
    case Strategy::kCustom: return "custom";
  }
  return "custom";
}

std::optional<double> parse_fraction(const std::string& text) {
  auto parse_num = [](const std::string& s) -> std::optional<double> {
    if (s.empty()) return std::nullopt;
    try {
      std::size_t used = 0;
      double v = std::stod(s, &used);
      if (used != s.size()) return std::nullopt;
      return v;
    } catch (...) {
      return std::nullopt;
    }
  };
  std::string t;
  for (char ch : text)
    if (ch != ' ') t.push_back(ch);
  if (!t.empty() && t.back() == '%') {
    auto v = parse_num(t.substr(0, t.size() - 1));
    if (!v) return std::nullopt;
    return *v / 100.0;
  }
  auto slash = t.find('/');
  if (slash != std::string::npos) {
    auto a = parse_num(t.substr(0, slash));
    auto b = parse_num(t.substr(slash + 1));
    if (!a || !b || *b == 0) return std::nullopt;
    return *a / *b;
  }
  return parse_num(t);
}

const DatasetSpec& RunConfig::dataset(const std::string& name) const {
  for (const auto& d : datasets)
    if (d.name == name) return d;
  throw ConfigError("datasets." + name + ": no such dataset");
}

nlohmann::json RunConfig::to_json() const {
  using nlohmann::json;
  json j;
  j["config_file"] = source_file;
  j["run_name"] = run_name;
  j["seed"] = seed;
  j["output_dir"] = output_dir;
  j["model"] = {{"path", model.path}, {"init", model.init}, {"config", model.config}, {"save_dtype", model.save_dtype}};
  j["tokenizer"] = tokenizer;
  j["template"] = {{"name", template_name}, {"system_message", system_message ? json(*system_message) : json(nullptr)}};
  j["data"] = {{"max_seq_len", data.max_seq_len}, {"truncation", data.truncation},
               {"on_bad_record", data.on_bad_record}, {"max_record_bytes", data.max_record_bytes}, {"batching", data.batching},
               {"pack_window", data.pack_window}, {"group_by_length", data.group_by_length},
               {"shuffle", data.shuffle}, {"cache_dir", data.cache_dir}};
  json ds = json::object();
  for (const auto& d : datasets) {
    json e = {{"path", d.path}, {"format", d.format}, {"ability", d.ability}, {"fraction", d.fraction},
              {"strip_calculator", d.strip_calculator}};
    if (!d.filter_field.empty()) e["filter"] = {{"field", d.filter_field}, {"equals", d.filter_equals}};
    if (d.format == "text") e["text_field"] = d.text_field;
    if (d.size >= 0) e["size"] = d.size;
    if (d.repeat != 1) e["repeat"] = d.repeat;
    if (d.system_message) e["system_message"] = *d.system_message;
    ds[d.name] = e;
  }
  j["datasets"] = ds;
  j["strategy"] = {{"name", strategy_name(strategy)}, {"k", k}};
  json st = json::array();
  for (const auto& s : stages) {
    json src = json::array();
    for (const auto& x : s.sources) src.push_back({{"dataset", x.dataset}, {"fraction", x.fraction}, {"replay", x.replay}});
    st.push_back({{"name", s.name}, {"sources", src}, {"epochs", s.epochs}, {"lr", s.lr},
                  {"min_lr_ratio", s.min_lr_ratio}, {"schedule", s.schedule}, {"warmup_ratio", s.warmup_ratio},
                  {"warmup_steps", s.warmup_steps}});
  }
  j["stages"] = st;
  j["train"] = {{"epochs", train.epochs}, {"lr", train.lr}, {"min_lr_ratio", train.min_lr_ratio},
                {"schedule", train.schedule}, {"warmup_ratio", train.warmup_ratio},
                {"warmup_steps", train.warmup_steps}, {"batch_size", train.batch_size},
                {"grad_accum", train.grad_accum}, {"max_grad_norm", train.max_grad_norm},
                {"weight_decay", train.weight_decay}, {"adam_beta1", train.adam_beta1},
                {"adam_beta2", train.adam_beta2}, {"adam_eps", train.adam_eps}, {"precision", train.precision},
                {"activation_checkpointing", train.activation_checkpointing}, {"log_every", train.log_every},
                {"save_every", train.save_every}, {"keep_checkpoints", train.keep_checkpoints},
                {"max_nonfinite_steps", train.max_nonfinite_steps}, {"threads", train.threads},
                {"device", train.device}, {"max_steps", train.max_steps},
                {"reset_optimizer_between_stages", train.reset_optimizer_between_stages},
                {"export_stage_models", train.export_stage_models}};
  // Only when set, so that the identity (sweep run hashes) of row-batched configs is unchanged.
  if (train.samples_per_step > 0) {
    j["train"]["samples_per_step"] = train.samples_per_step;
    j["train"]["tokens_per_micro_batch"] = train.tokens_per_micro_batch;
  }
  if (train.rows_per_step > 0) j["train"]["rows_per_step"] = train.rows_per_step;
  j["dist"] = {{"strategy", dist.strategy}, {"backend", dist.backend}, {"timeout_s", dist.timeout_s},
               {"bucket_mb", dist.bucket_mb}, {"gpus", dist.gpus}, {"gpu_type", dist.gpu_type}};
  json b = json::array();
  for (const auto& e : eval.benchmarks) b.push_back({{"name", e.name}, {"data", e.data}, {"limit", e.limit}});
  j["eval"] = {{"at_stage_end", eval.at_stage_end}, {"at_end", eval.at_end}, {"benchmarks", b},
               {"max_new_tokens", eval.max_new_tokens}, {"batch_size", eval.batch_size}};
  return j;
}

RunConfig parse_run_config(const std::string& yaml_text, const std::string& source_name,
                           const std::vector<std::string>& overrides) {
  Document doc = parse_yaml(yaml_text, source_name);
  normalise_shorthands(doc);
  for (const auto& o : overrides) apply_override(doc, o);
  return resolve(doc);
}

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::string text;
  try {
    text = fs::read_file(path);
  } catch (const Error& e) {
    throw ConfigError(std::string(e.what()));
  }
  return parse_run_config(text, path, overrides);
}

std::string apply_overrides_to_text(const std::string& yaml_text, const std::vector<std::string>& overrides) {
  Document doc = parse_yaml(yaml_text, "<sweep>");
  normalise_shorthands(doc);
  for (const auto& o : overrides) apply_override(doc, o);
  return to_yaml(doc.root);
}

}  // namespace sft::config
