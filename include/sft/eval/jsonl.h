// JSON-lines input for the evaluators: plain or gzip-compressed (".gz", decompressed by the
// system's `gzip -dc`, so sft needs no zlib), blank lines skipped, errors as file:line.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

namespace sft::eval {

// Bounds on what an evaluation input may hold, so that a gzip bomb or one enormous line
// stops with the file (and line) named instead of exhausting memory. The defaults are far
// above any real benchmark or samples file. Process-wide: `sft eval` sets them from
// --max-input-bytes and --max-record-bytes.
struct InputLimits {
  std::int64_t max_input_bytes = std::int64_t{1} << 30;  // a file, after decompression
  std::int64_t max_record_bytes = 8 << 20;               // one line
};
void set_input_limits(const InputLimits& limits);
const InputLimits& input_limits();

// The file's bytes; ".gz" files decompressed. Throws DataError naming the file, also when
// it holds (or decompresses to) more than input_limits().max_input_bytes.
std::string read_maybe_gzip(const std::string& path);

// Calls f(object, "file:line") for each non-blank line. Throws DataError for malformed
// JSON, a line that is not an object, or one above input_limits().max_record_bytes.
void for_each_json_line(const std::string& path,
                        const std::function<void(const nlohmann::json&, const std::string& where)>& f);

// j[key] as a string; DataError "where: missing string field \"key\"" otherwise.
std::string string_field(const nlohmann::json& j, const char* key, const std::string& where);

}  // namespace sft::eval
