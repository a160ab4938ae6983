#include "sft/config/yaml_file.h"

#include "config/yaml_tree.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft::config {

nlohmann::ordered_json read_yaml_file(const std::string& path) {
  if (!fs::exists(path)) throw ConfigError(path + ": not found");
  return parse_yaml(fs::read_file(path), path).root;
}

}  // namespace sft::config
