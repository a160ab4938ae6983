#include "sft/model/safetensors_header.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>

#include "sft/util/error.h"
#include "sft/util/safe_io.h"

namespace sft::model {
namespace {

constexpr std::uint64_t kMaxHeader = 100ull << 20;  // the reference implementation's limit

[[noreturn]] void fail(const std::string& file, const std::string& msg) {
  throw CheckpointError(file + ": invalid safetensors file: " + msg);
}

}  // namespace

std::size_t dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  return 0;
}

std::int64_t TensorEntry::numel() const {
  std::int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

namespace {

using nlohmann::json;

// The 8-byte little-endian header length, checked against the limit and the file.
std::uint64_t header_length(const std::uint8_t* data, std::size_t size, const std::string& file) {
  if (size < 8)
    fail(file, "the file has " + std::to_string(size) + " bytes, fewer than the 8-byte header length");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kMaxHeader) fail(file, "header length " + std::to_string(n) + " exceeds the 100 MiB limit");
  if (n > size - 8)
    fail(file, "header length " + std::to_string(n) + " exceeds the file (" + std::to_string(size) +
                   " bytes): truncated?");
  if (n < 2 || data[8] != '{') fail(file, "the header is not a JSON object");
  return n;
}

// The header's JSON object (its n bytes after the length).
json parse_header_json(const std::uint8_t* data, std::uint64_t n, const std::string& file) {
  // Duplicate names would silently shadow each other in a JSON object: reject them.
  std::set<std::string> seen;
  std::string duplicate;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      std::string k = parsed.get<std::string>();
      if (!seen.insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(data + 8, data + 8 + n, cb);
  } catch (const json::exception& e) {
    fail(file, std::string("malformed header JSON: ") + json_error_text(e));
  }
  if (!duplicate.empty()) fail(file, "tensor \"" + duplicate + "\" appears twice in the header");
  if (!j.is_object()) fail(file, "the header is not a JSON object");
  return j;
}

void read_metadata(const json& v, const std::string& file, std::map<std::string, std::string>& metadata) {
  if (!v.is_object()) fail(file, "__metadata__ must be an object of strings");
  for (auto m = v.begin(); m != v.end(); ++m) {
    if (!m.value().is_string()) fail(file, "__metadata__." + m.key() + " must be a string");
    metadata[m.key()] = m.value().get<std::string>();
  }
}

// A tensor's shape into e.shape; returns its element count.
std::uint64_t read_shape(const json& v, const std::string& where, const std::string& file, TensorEntry& e) {
  if (!v.contains("shape") || !v["shape"].is_array()) fail(file, where + "missing list \"shape\"");
  std::uint64_t numel = 1;
  for (const auto& d : v["shape"]) {
    if (!d.is_number_unsigned()) fail(file, where + "shape entries must be non-negative integers");
    std::uint64_t dim = d.get<std::uint64_t>();
    if (dim != 0 && numel > (std::uint64_t(1) << 62) / dim) fail(file, where + "shape overflows");
    numel *= dim;
    e.shape.push_back(static_cast<std::int64_t>(dim));
  }
  return numel;
}

// One tensor's entry, its fields checked and its bytes against its dtype, shape and the data area.
TensorEntry read_tensor(const std::string& name, const json& v, std::uint64_t data_size,
                        const std::string& file) {
  const std::string where = "tensor \"" + name + "\": ";
  if (!v.is_object()) fail(file, where + "expected {dtype, shape, data_offsets}");
  for (auto f = v.begin(); f != v.end(); ++f)
    if (f.key() != "dtype" && f.key() != "shape" && f.key() != "data_offsets")
      fail(file, where + "unexpected field \"" + f.key() + "\"");
  TensorEntry e;
  e.name = name;
  if (!v.contains("dtype") || !v["dtype"].is_string()) fail(file, where + "missing string \"dtype\"");
  e.dtype = v["dtype"].get<std::string>();
  std::size_t es = dtype_size(e.dtype);
  if (es == 0) fail(file, where + "unknown dtype \"" + e.dtype + "\"");
  const std::uint64_t numel = read_shape(v, where, file, e);
  const json* off = v.contains("data_offsets") ? &v["data_offsets"] : nullptr;
  if (!off || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned())
    fail(file, where + "data_offsets must be [begin, end] with non-negative integers");
  e.begin = (*off)[0].get<std::uint64_t>();
  e.end = (*off)[1].get<std::uint64_t>();
  if (e.begin > e.end)
    fail(file, where + "data_offsets begin " + std::to_string(e.begin) + " > end " + std::to_string(e.end));
  if (e.end > data_size)
    fail(file, where + "data_offsets end " + std::to_string(e.end) + " is past the data area (" +
                   std::to_string(data_size) + " bytes): truncated file?");
  if (e.end - e.begin != numel * es)
    fail(file, where + "holds " + std::to_string(e.end - e.begin) + " bytes but dtype " + e.dtype +
                   " x shape needs " + std::to_string(numel * es));
  return e;
}

// Sorts the tensors into data order and checks that they tile the data area.
void check_tiling(std::vector<TensorEntry>& tensors, std::uint64_t data_size, const std::string& file) {
  std::sort(tensors.begin(), tensors.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t pos = 0;
  for (const auto& e : tensors) {
    if (e.begin < pos) fail(file, "tensor \"" + e.name + "\" overlaps the previous tensor's bytes");
    if (e.begin > pos)
      fail(file, "bytes " + std::to_string(pos) + ".." + std::to_string(e.begin) + " before tensor \"" +
                     e.name + "\" belong to no tensor");
    pos = e.end;
  }
  if (pos != data_size)
    fail(file,
         "the data area has " + std::to_string(data_size - pos) + " trailing bytes that belong to no tensor");
}

}  // namespace

SafetensorsHeader parse_safetensors_header(const std::uint8_t* data, std::size_t size,
                                           const std::string& file) {
  const std::uint64_t n = header_length(data, size, file);
  SafetensorsHeader h;
  h.header_len = n;
  h.data_offset = 8 + n;
  const std::uint64_t data_size = size - h.data_offset;
  const json j = parse_header_json(data, n, file);
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__")
      read_metadata(it.value(), file, h.metadata);
    else
      h.tensors.push_back(read_tensor(it.key(), it.value(), data_size, file));
  }
  check_tiling(h.tensors, data_size, file);
  return h;
}

}  // namespace sft::model
