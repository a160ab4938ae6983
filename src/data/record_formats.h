// Internal: one record of each format, parsed and checked (readers.cpp reads the files).
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "sft/config/run_config.h"
#include "sft/data/readers.h"

namespace sft::data {

// A record-level problem: becomes a BadRecord (or the run's error).
struct BadInput {
  std::string reason;
};

const char* type_name(const nlohmann::json& j);  // "object", "list", ...
// The string field `name`; BadInput naming what was `expected` when missing (if `required`)
// or not a string.
std::string string_field(const nlohmann::json& obj, const char* name, const char* expected,
                         bool required = true);
std::string id_of(const nlohmann::json& obj, const char* key);  // "" when absent
bool valid_utf8(std::string_view s);

// Fills `r` from one JSON record of spec.format; throws BadInput.
void parse_record(const config::DatasetSpec& spec, const nlohmann::json& j, Record& r, ReadResult& res,
                  bool keep_unanswered);

}  // namespace sft::data
