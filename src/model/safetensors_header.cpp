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

SafetensorsHeader parse_safetensors_header(const std::uint8_t* data, std::size_t size,
                                           const std::string& file) {
  using nlohmann::json;
  if (size < 8)
    fail(file, "the file has " + std::to_string(size) + " bytes, fewer than the 8-byte header length");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kMaxHeader) fail(file, "header length " + std::to_string(n) + " exceeds the 100 MiB limit");
  if (n > size - 8)
    fail(file, "header length " + std::to_string(n) + " exceeds the file (" + std::to_string(size) +
                   " bytes): truncated?");
  if (n < 2 || data[8] != '{') fail(file, "the header is not a JSON object");

  SafetensorsHeader h;
  h.header_len = n;
  h.data_offset = 8 + n;
  const std::uint64_t data_size = size - h.data_offset;

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

  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(file, "__metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail(file, "__metadata__." + m.key() + " must be a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
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
    if (!v.contains("shape") || !v["shape"].is_array()) fail(file, where + "missing list \"shape\"");
    std::uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) fail(file, where + "shape entries must be non-negative integers");
      std::uint64_t dim = d.get<std::uint64_t>();
      if (dim != 0 && numel > (std::uint64_t(1) << 62) / dim) fail(file, where + "shape overflows");
      numel *= dim;
      e.shape.push_back(static_cast<std::int64_t>(dim));
    }
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
    h.tensors.push_back(std::move(e));
  }
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t pos = 0;
  for (const auto& e : h.tensors) {
    if (e.begin < pos) fail(file, "tensor \"" + e.name + "\" overlaps the previous tensor's bytes");
    if (e.begin > pos)
      fail(file, "bytes " + std::to_string(pos) + ".." + std::to_string(e.begin) + " before tensor \"" +
                     e.name + "\" belong to no tensor");
    pos = e.end;
  }
  if (pos != data_size)
    fail(file,
         "the data area has " + std::to_string(data_size - pos) + " trailing bytes that belong to no tensor");
  return h;
}

}  // namespace sft::model
