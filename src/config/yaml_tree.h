// Internal: a YAML document as an ordered JSON tree whose scalars keep their YAML text,
// plus the source line of every key path, so that validation can say "file:line: key".
// Overrides (`--set a.b[1].c=value`) edit this tree and mark the paths they touched.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace YAML {
class Node;
}

namespace sft::config {

using Tree = nlohmann::ordered_json;

struct Document {
  std::string file;
  Tree root;                         // objects, arrays, strings (raw scalars) and nulls
  std::map<std::string, int> lines;  // key path -> 1-based line in `file`
  std::set<std::string> overridden;  // key paths set by --set (and their prefixes' children)
};

// Parses YAML text; throws ConfigError("file:line: ...") on syntax errors and duplicate keys.
Document parse_yaml(const std::string& text, const std::string& file);

// "stages[1].lr" -> {"stages", "1", "lr"}; "a.b.0" -> {"a", "b", "0"}.
std::vector<std::string> split_key_path(const std::string& path);

// Bounds on what a config or sweep file may hold, far above any real one: nesting depth (in
// the text, before parsing: yaml-cpp itself recurses per level) and values once aliases are
// expanded (a 1 KB file of aliases of aliases expands to billions). ConfigError naming the
// file and line otherwise.
constexpr int kMaxYamlDepth = 64;
constexpr std::size_t kMaxYamlValues = 100000;
void check_yaml_text(const std::string& text, const std::string& file);
void check_yaml_values(const YAML::Node& root, const std::string& file);
// A list index in a key path: its value, or SIZE_MAX (past any list) when the text is not
// digits or too long to be one.
std::size_t index_value(const std::string& s);
std::string join_key_path(const std::vector<std::string>& parts, const Tree* root);

// Applies one "key.path=value" override. `shorthands` maps a key whose value may be a bare
// scalar to the field that scalar means (strategy: name), so `--set strategy=dmt` works.
void apply_override(Document& doc, const std::string& assignment);

// Scalar-or-map keys: `strategy: dmt` == `strategy: {name: dmt}`.
void normalise_shorthands(Document& doc);

std::string to_yaml(const Tree& t);

}  // namespace sft::config
