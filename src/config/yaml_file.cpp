// read_yaml_file (sft/config/yaml_file.h): a YAML file as plain values with their lines, for
// the sweep files; the checks and messages are the run config's (yaml_tree.h).
#include "sft/config/yaml_file.h"

#include <yaml-cpp/yaml.h>

#include "config/yaml_tree.h"
#include "sft/config/run_config.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft::config {
namespace {

int line_of(const YAML::Node& n) { return n.Mark().is_null() ? 0 : n.Mark().line + 1; }

// A value as --set text; lists and maps in flow style, so they stay on one line.
std::string flow_text(const YAML::Node& n) {
  if (n.IsScalar()) return n.Scalar();
  YAML::Emitter out;
  out.SetMapFormat(YAML::Flow);
  out.SetSeqFormat(YAML::Flow);
  out << n;
  return out.c_str();
}

YamlValue convert(const YAML::Node& n) {
  YamlValue v;
  v.kind = n.IsMap()        ? YamlValue::kMap
           : n.IsSequence() ? YamlValue::kList
           : n.IsScalar()   ? YamlValue::kScalar
                            : YamlValue::kNull;
  v.scalar = n.Scalar();
  v.text = flow_text(n);
  v.line = line_of(n);
  if (n.IsSequence())
    for (const auto& item : n) v.items.push_back(convert(item));
  if (n.IsMap())
    for (auto it = n.begin(); it != n.end(); ++it) {
      YamlValue item = convert(it->second);
      item.key = it->first.Scalar();
      item.key_line = line_of(it->first);
      v.items.push_back(std::move(item));
    }
  return v;
}

}  // namespace

const YamlValue* YamlValue::get(const std::string& k) const {
  if (kind != kMap) return nullptr;
  for (const auto& item : items)
    if (item.key == k) return &item;
  return nullptr;
}

YamlValue read_yaml_file(const std::string& path, const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    std::string text = fs::read_file(path);
    if (!overrides.empty()) text = apply_overrides_to_text(text, overrides);
    check_yaml_text(text, path);
    root = YAML::Load(text);
    check_yaml_values(root, path);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(path, e.mark.line + 1, "", "YAML syntax error: " + e.msg);
  } catch (const Error& e) {
    throw ConfigError(e.what());
  }
  return convert(root);
}

nlohmann::ordered_json read_yaml_as_json(const std::string& path) {
  if (!fs::exists(path)) throw ConfigError(path + ": not found");
  return parse_yaml(fs::read_file(path), path).root;
}

}  // namespace sft::config
