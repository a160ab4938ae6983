// Internal: every config key declared once, as a row of its section's table: its name, the
// member it fills, its range or choices, and what it means. Reading (and its checks),
// unknown-key detection with did-you-mean, the resolved-settings table, to_json, which
// keys a resumed run may change, and `sft config keys` (docs/config.md) are all
// driven by these tables.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/reader.h"
#include "sft/config/run_config.h"

namespace sft::config {

template <class S>
struct Field {
  std::string key;   // relative to the section: "lr", "filter.field"
  std::string kind;  // for the reference: "integer >= 1", "one of: fp32, bf16"
  std::string doc;
  std::function<void(Reader&, const std::string& path, S&)> read;  // default: the member's current value
  std::function<nlohmann::json(const S&)> json;                    // null: not written by to_json
  std::function<bool(const S&)> in_json;                           // null: always written
  bool resume_may_change = false;  // does not change what is trained (where outputs go, logging...)
  std::string default_text;        // for the reference, when the default is not a constant
  // A key holding a section: its rows in the key reference (null: the one row of this key),
  // and whether a resume may change `rest` in "key.rest" (null: only as the whole key may).
  std::function<void(std::vector<KeyDoc>&)> reference;
  std::function<bool(const std::string& rest)> rest_may_change;

  Field defaults(std::string text) && {
    default_text = std::move(text);
    return std::move(*this);
  }

  Field free() && {
    resume_may_change = true;
    return std::move(*this);
  }
  Field when(std::function<bool(const S&)> pred) && {
    in_json = std::move(pred);
    return std::move(*this);
  }
};

template <class S>
using Table = std::vector<Field<S>>;

template <class S, class I>
Field<S> integer(std::string key, I S::*m, std::int64_t low, std::int64_t high, std::string doc) {
  std::string kind = "integer in [" + std::to_string(low) + ", " + std::to_string(high) + "]";
  if (high == INT64_MAX) kind = "integer >= " + std::to_string(low);
  return {
      std::move(key), kind, std::move(doc),
      [=](Reader& r, const std::string& p, S& s) { s.*m = static_cast<I>(r.integer(p, s.*m, low, high)); },
      [=](const S& s) { return nlohmann::json(s.*m); }};
}

template <class S>
Field<S> number(std::string key, double S::*m, double low, double high, unsigned flags, std::string doc) {
  std::string kind = std::string(flags & kFraction ? "fraction" : "number") + " in " +
                     (flags & kOpenLow ? "(" : "[") + fmt_double(low) + ", " + fmt_double(high) + "]";
  if (high == HUGE_VAL) kind = std::string("number ") + (flags & kOpenLow ? "> " : ">= ") + fmt_double(low);
  return {std::move(key), kind, std::move(doc),
          [=](Reader& r, const std::string& p, S& s) { s.*m = r.num(p, s.*m, low, high, flags); },
          [=](const S& s) { return nlohmann::json(s.*m); }};
}

template <class S>
Field<S> boolean(std::string key, bool S::*m, std::string doc) {
  return {std::move(key), "true | false", std::move(doc),
          [=](Reader& r, const std::string& p, S& s) { s.*m = r.boolean(p, s.*m); },
          [=](const S& s) { return nlohmann::json(s.*m); }};
}

template <class S>
Field<S> text(std::string key, std::string S::*m, std::string doc) {
  return {std::move(key), "string", std::move(doc),
          [=](Reader& r, const std::string& p, S& s) { s.*m = r.str(p, s.*m); },
          [=](const S& s) { return nlohmann::json(s.*m); }};
}

template <class S, class E>
Field<S> choice(std::string key, E S::*m, std::string doc) {
  return {std::move(key), "one of: " + choice_list<E>(), std::move(doc),
          [=](Reader& r, const std::string& p, S& s) { s.*m = r.choice<E>(p, s.*m); },
          [=](const S& s) { return nlohmann::json(name(s.*m)); }};
}

// The sections' tables (fields.cpp).
const Table<StageHparams>& stage_hparam_fields();  // train.*, strategy.stage_overrides.<stage>.*, stages[i].*
const Table<TrainSpec>& train_fields();            // train.*, after the stage hyper-parameters
const Table<DataSpec>& data_fields();
const Table<ModelSpec>& model_fields();
const Table<DistSpec>& dist_fields();
const Table<EvalSpec>& eval_fields();
const Table<DatasetSpec>& dataset_fields();      // datasets.<name>.*
const Table<EvalBenchmark>& benchmark_fields();  // eval.benchmarks[i].*
// The top-level keys: the scalar ones are read here, the sections by their tables, and
// datasets, strategy and stages by their own readers (stages.cpp), which these rows name.
const Table<RunConfig>& top_fields();

// Datasets, strategy presets and explicit stages (stages.cpp).
void read_datasets(Reader& r, RunConfig& c);
void expand_strategy(Reader& r, RunConfig& c);
void read_explicit_stages(Reader& r, RunConfig& c);
// The names `strategy.name` takes: every Strategy but kCustom, which stages written out mean.
std::vector<std::string> strategy_presets();

template <class S>
std::vector<std::string> keys(const Table<S>& t) {
  std::vector<std::string> k;
  for (const auto& f : t) k.push_back(f.key);
  return k;
}

// The key reference's rows of a table: each key under `prefix`, its default from S's
// initialiser, or `default_prefix` + key where the default is another key's value.
template <class S>
void reference_rows(const std::string& prefix, const Table<S>& table, std::vector<KeyDoc>& out,
                    const std::string& default_prefix = "") {
  const S defaults{};
  for (const auto& f : table) {
    std::string def = f.default_text;
    if (def.empty() && !default_prefix.empty()) def = default_prefix + f.key;
    if (def.empty() && f.json) {
      const nlohmann::json j = f.json(defaults);
      def = j.is_null()     ? "-"
            : j.is_string() ? (j.get<std::string>().empty() ? "\"\"" : j.get<std::string>())
                            : j.dump();
    }
    out.push_back({prefix + f.key, f.kind, def.empty() ? "-" : def, f.doc});
  }
}

// Whether a resume may change the key `rest` starts with ("log_every", "benchmarks[0].name").
template <class S>
bool may_change(const Table<S>& table, const std::string& rest) {
  const std::string key = rest.substr(0, rest.find_first_of(".["));
  for (const auto& f : table)
    if (f.key == key) return f.resume_may_change;
  return false;
}

template <class S>
void read_fields(Reader& r, const std::string& section, const Table<S>& table, S& s) {
  for (const auto& f : table)
    if (f.read) f.read(r, section + "." + f.key, s);
}

template <class S>
void write_fields(const Table<S>& table, const S& s, nlohmann::json& out) {
  for (const auto& f : table)
    if (f.json && (!f.in_json || f.in_json(s))) out[f.key] = f.json(s);
}

}  // namespace sft::config
