// A YAML file read as a JSON tree, for files that are not run configs (the sweep's analysis
// plan): objects, arrays, nulls and scalars kept as their YAML text (the caller converts and
// checks them). Syntax errors, duplicate keys and oversized documents throw ConfigError
// naming file:line, as for run configs.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace sft::config {

nlohmann::ordered_json read_yaml_file(const std::string& path);

}  // namespace sft::config
