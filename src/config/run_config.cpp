// The run config: the top-level keys' table, resolution (every problem collected, reported
// in file order), JSON output, the key reference and the resume rule.
#include "sft/config/run_config.h"

#include <algorithm>
#include <climits>

#include "config/fields.h"
#include "config/yaml_tree.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft::config {
namespace {

// A section read by its table, then checked by `check` (rules across its keys).
template <class S>
Field<RunConfig> section(std::string key, std::string doc, S RunConfig::*m, const Table<S>& (*table)(),
                         void (*check)(Reader&, const RunConfig&) = nullptr) {
  Field<RunConfig> f{key, "map", std::move(doc),
                     [=](Reader& r, const std::string& p, RunConfig& c) {
                       r.check_keys(p, keys(table()));
                       read_fields(r, p, table(), c.*m);
                       if (check) check(r, c);
                     },
                     [=](const RunConfig& c) {
                       nlohmann::json j = nlohmann::json::object();
                       write_fields(table(), c.*m, j);
                       return j;
                     }};
  f.reference = [=](std::vector<KeyDoc>& out) { reference_rows(key + ".", table(), out); };
  f.rest_may_change = [=](const std::string& rest) { return may_change(table(), rest); };
  return f;
}

// A top-level row that documents keys read elsewhere (datasets, strategy, stages).
Field<RunConfig> with_reference(Field<RunConfig> f, std::function<void(std::vector<KeyDoc>&)> rows,
                                std::function<bool(const std::string&)> rest_may_change = nullptr) {
  f.reference = std::move(rows);
  f.rest_may_change = std::move(rest_may_change);
  return f;
}

// Train's rules across keys.
void check_train(Reader& r, const TrainSpec& t) {
  // grad_accum: 1 (the default) imposes nothing; any other value states the batch in rows.
  if (t.samples_per_step > 0 && t.grad_accum != 1)
    r.error("train.samples_per_step",
            "exclusive with train.grad_accum: a step of samples_per_step samples takes as many micro-batches "
            "as they "
            "need; give one of the two (the global batch in samples, or in rows of batch_size x grad_accum x "
            "ranks)");
  if (t.rows_per_step > 0 && t.samples_per_step > 0)
    r.error("train.rows_per_step",
            "exclusive with train.samples_per_step: state the global batch in rows or in samples");
  else if (t.rows_per_step > 0 && t.grad_accum != 1)
    r.error("train.rows_per_step",
            "exclusive with train.grad_accum: the accumulation is derived from the world size "
            "(rows_per_step / (batch_size x ranks))");
  else if (t.rows_per_step > 0 && t.rows_per_step % t.batch_size != 0)
    r.error("train.rows_per_step", std::to_string(t.rows_per_step) +
                                       " is not a multiple of train.batch_size (" +
                                       std::to_string(t.batch_size) + ")");
  if (t.tokens_per_micro_batch > 0 && t.samples_per_step == 0)
    r.error("train.tokens_per_micro_batch",
            "only applies with train.samples_per_step (rows per micro-batch are train.batch_size)");
}

Field<RunConfig> top(std::string key, std::string kind, std::string doc,
                     std::function<void(Reader&, const std::string&, RunConfig&)> read,
                     std::function<nlohmann::json(const RunConfig&)> json) {
  return {std::move(key), std::move(kind), std::move(doc), std::move(read), std::move(json)};
}

}  // namespace

namespace {

// run_name: the config file's stem unless given.
Field<RunConfig> run_name_row() {
  using C = RunConfig;
  return top(
             "run_name", "string", "the run's name",
             [](Reader& r, const std::string& p, C& c) {
               std::string stem = fs::basename(r.doc().file);
               if (auto dot = stem.rfind('.'); dot != std::string::npos) stem = stem.substr(0, dot);
               c.run_name = r.str(p, stem.empty() ? "run" : stem);
             },
             [](const C& c) { return nlohmann::json(c.run_name); })
      .free()
      .defaults("the config file's name");
}

// model: its table, then a path or a config, and a path for pretrained weights.
Field<RunConfig> model_row() {
  using C = RunConfig;
  return section("model", "the model (model.*)", &C::model, model_fields, [](Reader& r, const C& c) {
    if (c.model.path.empty() && c.model.config.is_null())
      r.error("model", "missing: model.path (a Hugging Face folder) or model.config (config.json fields)");
    if (c.model.init == ModelInit::kPretrained && c.model.path.empty())
      r.error("model.init", "pretrained needs model.path");
  });
}

// tokenizer.path: a file or a folder, model.path's folder by default.
Field<RunConfig> tokenizer_row() {
  using C = RunConfig;
  return top(
             "tokenizer", "{path}",
             "tokenizer.path: a sentencepiece tokenizer.model, a tokenizer.json, or a folder holding one",
             [](Reader& r, const std::string& p, C& c) {
               r.check_keys(p, {"path"});
               c.tokenizer = r.str(p + ".path", c.model.path);
               if (c.tokenizer.empty())
                 r.error(p, "missing: a tokenizer.model or tokenizer.json path (or model.path's folder)");
             },
             [](const C& c) { return nlohmann::json(c.tokenizer); })
      .free()
      .defaults("<model.path>");
}

// template: the chat template by name and its system message.
Field<RunConfig> template_row() {
  using C = RunConfig;
  return top(
             "template", "{name, system_message}",
             "template.name: one of " + choice_list<Template>() +
                 "; template.system_message: overrides its default",
             [](Reader& r, const std::string& p, C& c) {
               r.check_keys(p, {"name", "system_message"});
               c.chat_template = r.choice<Template>(p + ".name", c.chat_template);
               c.system_message = r.opt_str(p + ".system_message");
             },
             [](const C& c) {
               return nlohmann::json{
                   {"name", name(c.chat_template)},
                   {"system_message", c.system_message ? nlohmann::json(*c.system_message) : nullptr}};
             })
      .defaults("vicuna_v1.1");
}

// train: the stage hyper-parameters (the run's defaults) and the loop's keys, in one map.
Field<RunConfig> train_row() {
  using C = RunConfig;
  return with_reference(
      top(
          "train", "map", "the optimizer and the loop (train.*; the stage hyper-parameters are the run's)",
          [](Reader& r, const std::string& p, C& c) {
            std::vector<std::string> allowed = keys(stage_hparam_fields());
            for (const auto& k : keys(train_fields())) allowed.push_back(k);
            r.check_keys(p, allowed);
            read_fields<StageHparams>(r, p, stage_hparam_fields(), c.train);
            read_fields(r, p, train_fields(), c.train);
            check_train(r, c.train);
          },
          [](const C& c) {
            nlohmann::json j = nlohmann::json::object();
            write_fields<StageHparams>(stage_hparam_fields(), c.train, j);
            write_fields(train_fields(), c.train, j);
            return j;
          }),
      [](std::vector<KeyDoc>& out) {
        reference_rows("train.", stage_hparam_fields(), out);
        reference_rows("train.", train_fields(), out);
      },
      [](const std::string& rest) {
        return may_change(stage_hparam_fields(), rest) || may_change(train_fields(), rest);
      });
}

// datasets: one map per dataset, read by read_datasets.
Field<RunConfig> datasets_row() {
  using C = RunConfig;
  return with_reference(
      top(
          "datasets", "map of name -> {path, format, ...}", "the data (datasets.<name>.*)",
          [](Reader& r, const std::string&, C& c) { read_datasets(r, c); },
          [](const C& c) {
            nlohmann::json ds = nlohmann::json::object();
            for (const auto& d : c.datasets) write_fields(dataset_fields(), d, ds[d.name]);
            return ds;
          }),
      [](std::vector<KeyDoc>& out) { reference_rows("datasets.<name>.", dataset_fields(), out); },
      [](const std::string& rest) {  // <name>.<key>
        const std::size_t dot = rest.find('.');
        return dot != std::string::npos && may_change(dataset_fields(), rest.substr(dot + 1));
      });
}

// strategy_presets() joined by `sep`.
std::string presets(const std::string& sep) {
  std::string s;
  for (const auto& p : strategy_presets()) s += (s.empty() ? "" : sep) + p;
  return s;
}

// strategy: a preset, expanded into stages by expand_strategy.
Field<RunConfig> strategy_row() {
  using C = RunConfig;
  return with_reference(
      top(
          "strategy", "name or {name, k, order, stage_overrides}",
          "a preset: " + presets(" | ") + " (k: the replay fraction)",
          [](Reader& r, const std::string& p, C& c) {
            if (!r.has(p)) return;
            if (r.has("stages"))
              return r.error("stages", "give either `strategy` (a preset) or `stages` (explicit), not both");
            r.check_keys(p, {"name", "k", "order", "stage_overrides"});
            if (!c.datasets.empty()) expand_strategy(r, c);
          },
          [](const C& c) {
            return nlohmann::json{{"name", strategy_name(c.strategy)}, {"k", c.k}};
          }),
      [](std::vector<KeyDoc>& out) {
        out.push_back({"strategy.name", presets(" | "), "-",
                       "a preset: " + presets(" | ") + " (k: the replay fraction)"});
        out.push_back({"strategy.k", "fraction in [0, 1]", "1/256",
                       "dmt: the share of each specialised dataset replayed in stage 2"});
        out.push_back({"strategy.order", "list of dataset names", "the datasets' order",
                       "sequential: the stage order"});
        reference_rows("strategy.stage_overrides.<stage>.", stage_hparam_fields(), out, "train.");
      });
}

// stages: explicit stages, when no strategy is given.
Field<RunConfig> stages_row() {
  using C = RunConfig;
  return with_reference(
      top(
          "stages", "list of {name, sources, replay_fraction, epochs, lr, ...}",
          "explicit stages, instead of a strategy",
          [](Reader& r, const std::string& p, C& c) {
            if (r.has("strategy")) return;
            if (!r.has(p))
              return r.error("strategy", "missing: a strategy (" + presets(", ") + ") or explicit stages");
            if (!c.datasets.empty()) read_explicit_stages(r, c);
          },
          [](const C& c) {
            nlohmann::json st = nlohmann::json::array();
            for (const auto& s : c.stages) {
              nlohmann::json src = nlohmann::json::array();
              for (const auto& x : s.sources)
                src.push_back({{"dataset", x.dataset}, {"fraction", x.share}, {"replay", x.replay}});
              nlohmann::json j = {{"name", s.name}, {"sources", src}};
              write_fields(stage_hparam_fields(), static_cast<const StageHparams&>(s), j);
              st.push_back(j);
            }
            return st;
          }),
      [](std::vector<KeyDoc>& out) {
        out.push_back({"stages[i].name", "string", "stage<i+1>", "the stage's name"});
        out.push_back({"stages[i].sources", "map of dataset -> fraction", "-", "what the stage trains on"});
        out.push_back({"stages[i].replay_fraction", "fraction in [0, 1]", "0",
                       "adds this fraction of every earlier stage's data (DMT's k)"});
        reference_rows("stages[i].", stage_hparam_fields(), out, "train.");
      });
}

}  // namespace

const Table<RunConfig>& top_fields() {
  using C = RunConfig;
  static const Table<C> t = {
      top("description", "string", "free text, not read", nullptr, nullptr).free(),
      run_name_row(),
      integer("seed", &C::seed, 0, INT64_MAX, "data order, fractions and initialisation"),
      top(
          "output_dir", "string", "the run folder",
          [](Reader& r, const std::string& p, C& c) { c.output_dir = r.str(p, "runs/" + c.run_name); },
          [](const C& c) { return nlohmann::json(c.output_dir); })
          .free()
          .defaults("runs/<run_name>"),
      model_row(),
      tokenizer_row(),
      template_row(),
      section("data", "tokenization and batching (data.*)", &C::data, data_fields),
      train_row(),
      datasets_row(),
      section("dist", "distributed training (dist.*)", &C::dist, dist_fields),
      with_reference(section("eval", "evaluation during training (eval.*)", &C::eval, eval_fields).free(),
                     [](std::vector<KeyDoc>& out) {
                       reference_rows("eval.", eval_fields(), out);
                       reference_rows("eval.benchmarks[i].", benchmark_fields(), out);
                     }),
      strategy_row(),
      stages_row(),
  };
  return t;
}

namespace {

RunConfig resolve(Document& doc) {
  Reader r(doc);
  RunConfig c;
  c.source_file = doc.file;
  r.check_keys("", keys(top_fields()));
  for (const auto& f : top_fields())
    if (f.read) f.read(r, f.key, c);
  // A micro-batch's token budget holds any one sample (samples are at most data.max_seq_len long).
  if (c.train.tokens_per_micro_batch > 0 && c.train.tokens_per_micro_batch < c.data.max_seq_len)
    r.error("train.tokens_per_micro_batch",
            std::to_string(c.train.tokens_per_micro_batch) + " is below data.max_seq_len (" +
                std::to_string(c.data.max_seq_len) +
                "): a sample that long would not fit one micro-batch; give at least data.max_seq_len");
  for (auto& st : c.stages)
    for (auto& src : st.sources)
      for (std::size_t i = 0; i < c.datasets.size(); ++i)
        if (c.datasets[i].name == src.dataset) src.dataset_index = i;
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

std::vector<KeyDoc> key_reference() {
  std::vector<KeyDoc> out;
  for (const auto& f : top_fields()) {
    if (f.reference)
      f.reference(out);
    else
      reference_rows("", Table<RunConfig>{f}, out);
  }
  return out;
}

std::string key_reference_markdown() {
  auto cell = [](std::string s) {
    for (std::size_t i = 0; (i = s.find('|', i)) != std::string::npos; i += 2) s.insert(i, "\\");
    return s;
  };
  std::string md = "| key | kind | default | meaning |\n|---|---|---|---|\n";
  for (const auto& k : key_reference())
    md +=
        "| `" + k.key + "` | " + cell(k.kind) + " | " + cell(k.default_value) + " | " + cell(k.doc) + " |\n";
  return md;
}

bool resume_may_change(const std::string& key) {
  if (key == "config_file") return true;  // where the config was read from
  const std::string top = key.substr(0, key.find_first_of(".["));
  for (const auto& f : top_fields()) {
    if (f.key != top) continue;
    if (f.resume_may_change) return true;
    const std::size_t dot = key.find('.');
    return dot != std::string::npos && f.rest_may_change && f.rest_may_change(key.substr(dot + 1));
  }
  return false;
}

const char* strategy_name(Strategy s) {
  return choice_name(s).data();  // the names are string literals
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
  nlohmann::json j;
  j["config_file"] = source_file;
  write_fields(top_fields(), *this, j);
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
