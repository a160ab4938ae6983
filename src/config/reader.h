// Internal: reads typed values out of a Document, collecting every problem (each as
// "file:line: key.path: what is wrong") and the provenance of every setting read, for the
// settings table. Paths use the "a.b[1].c" notation of the messages.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/yaml_tree.h"
#include "sft/config/choices.h"
#include "sft/config/run_config.h"

namespace sft::config {

// How a number is read: a lower bound that is excluded, fractions ("1/256", "25%") accepted.
enum NumberFlags : unsigned { kClosed = 0, kOpenLow = 1, kFraction = 2 };

std::string fmt_double(double v);

// A YAML scalar as JSON: its text parsed as a JSON literal (number, bool, null), else the
// text itself; maps and lists converted element by element.
nlohmann::json scalar_json(const Tree& t);

class Reader {
 public:
  explicit Reader(Document& doc) : doc_(doc) {}

  const Document& doc() const { return doc_; }
  const Tree* find(const std::string& path) const;
  bool has(const std::string& path) const;  // present and not null

  std::string where(const std::string& path) const;  // "file:line: path" or "--set path"
  void error(const std::string& path, const std::string& msg) { errors_.push_back(where(path) + ": " + msg); }
  const std::vector<std::string>& errors() const { return errors_; }

  // Records a setting for the table printed at start (source: default, file:line or --set).
  void record(const std::string& path, const std::string& value, bool present);
  std::vector<Setting> take_settings() { return std::move(settings_); }

  // Each returns `def` (recorded as the default) when the key is absent or null, and `def`
  // with an error when the value is malformed or out of range.
  std::string str(const std::string& path, const std::string& def,
                  const std::vector<std::string>& choices = {});
  std::optional<std::string> opt_str(const std::string& path);
  double num(const std::string& path, double def, double low, double high, unsigned flags = kClosed);
  std::int64_t integer(const std::string& path, std::int64_t def, std::int64_t low,
                       std::int64_t high = INT64_MAX);
  bool boolean(const std::string& path, bool def);
  template <class E>
  E choice(const std::string& path, E def) {
    std::vector<std::string> names;
    for (const auto& c : Choices<E>::all) names.emplace_back(c.name);
    return parse_choice<E>(str(path, name(def), names)).value_or(def);
  }

  // Reports keys of the map at `path` that are not in `allowed`, with a did-you-mean.
  void check_keys(const std::string& path, const std::vector<std::string>& allowed);
  bool is_overridden(const std::string& path) const;

 private:
  Document& doc_;
  std::vector<std::string> errors_;
  std::vector<Setting> settings_;
};

}  // namespace sft::config
