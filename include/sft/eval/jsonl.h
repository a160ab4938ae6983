// JSON-lines input for the evaluators: plain or gzip-compressed (".gz", decompressed by the
// system's `gzip -dc`, so sft needs no zlib), blank lines skipped, errors as file:line.
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

namespace sft::eval {

// The file's bytes; ".gz" files decompressed. Throws DataError naming the file.
std::string read_maybe_gzip(const std::string& path);

// Calls f(object, "file:line") for each non-blank line. Throws DataError for malformed
// JSON or a line that is not an object.
void for_each_json_line(const std::string& path,
                        const std::function<void(const nlohmann::json&, const std::string& where)>& f);

// j[key] as a string; DataError "where: missing string field \"key\"" otherwise.
std::string string_field(const nlohmann::json& j, const char* key, const std::string& where);

}  // namespace sft::eval
