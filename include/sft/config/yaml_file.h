// A YAML file that is not a run config (a sweep file), read by the config module for the
// module that owns its meaning, so that config stays the only code that sees YAML nodes.
// Each value keeps its source line, for "file:line: key: ..." messages.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sft::config {

struct YamlValue {
  enum Kind { kNull, kScalar, kList, kMap } kind = kNull;
  std::string scalar;            // a scalar's text ("" for anything else)
  std::string text;              // the value as `--set` takes it: a scalar's text; lists and maps in
                                 // flow style, on one line ("[1, 2]", "{a: 1}"); "~" for null
  int line = 0;                  // 1-based; 0 when unknown
  std::string key;               // in a map: this value's key
  int key_line = 0;              // in a map: the key's line
  std::vector<YamlValue> items;  // a list's elements; a map's values, in file order

  // A map's value under `key`, or nullptr (absent, or not a map).
  const YamlValue* get(const std::string& key) const;
};

// Reads `path`, applies `overrides` ("key.path=value", as --set), and parses it within the
// bounds run configs have (depth, expanded values). Throws ConfigError naming the file (and
// the line of a syntax error).
YamlValue read_yaml_file(const std::string& path, const std::vector<std::string>& overrides = {});

// The same file as a JSON tree (for the sweep's analysis plan): objects, arrays, nulls and
// scalars kept as their YAML text (the caller converts and checks them). Syntax errors,
// duplicate keys and oversized documents throw ConfigError naming file:line.
nlohmann::ordered_json read_yaml_as_json(const std::string& path);

}  // namespace sft::config
