#include "sft/model/safetensors.h"

#include <ATen/Functions.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "sft/util/error.h"

namespace sft::model {

at::ScalarType scalar_type_of(const std::string& d) {
  if (d == "F32") return at::kFloat;
  if (d == "F16") return at::kHalf;
  if (d == "BF16") return at::kBFloat16;
  if (d == "F64") return at::kDouble;
  if (d == "I64") return at::kLong;
  if (d == "I32") return at::kInt;
  if (d == "I16") return at::kShort;
  if (d == "I8") return at::kChar;
  if (d == "U8") return at::kByte;
  if (d == "BOOL") return at::kBool;
  throw CheckpointError("dtype " + d + " is not supported for loading");
}

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kDouble: return "F64";
    case at::kLong: return "I64";
    case at::kInt: return "I32";
    case at::kShort: return "I16";
    case at::kChar: return "I8";
    case at::kByte: return "U8";
    case at::kBool: return "BOOL";
    default: throw CheckpointError(std::string("cannot write dtype ") + c10::toString(t) + " to safetensors");
  }
}

std::shared_ptr<const SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto f = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
  try {
    f->map_ = fs::MappedFile::open(path);
  } catch (const Error& e) {
    throw CheckpointError(e.what());
  }
  f->header_ = parse_safetensors_header(f->map_->data(), f->map_->size(), path);
  for (std::size_t i = 0; i < f->header_.tensors.size(); ++i) f->index_[f->header_.tensors[i].name] = i;
  return f;
}

const TensorEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorEntry* e = find(name);
  if (!e) throw CheckpointError(path() + ": no tensor \"" + name + "\"");
  at::ScalarType st = scalar_type_of(e->dtype);
  const std::uint8_t* p = map_->data() + header_.data_offset + e->begin;
  auto opts = at::TensorOptions().dtype(st);
  if (e->numel() == 0) return at::empty(e->shape, opts);
  if (reinterpret_cast<std::uintptr_t>(p) % dtype_size(e->dtype) != 0) {
    at::Tensor t = at::empty(e->shape, opts);
    std::memcpy(t.data_ptr(), p, e->end - e->begin);
    return t;
  }
  auto keep = map_;
  return at::from_blob(
      const_cast<std::uint8_t*>(p), e->shape, [keep](void*) {}, opts);
}

at::Tensor SafetensorsFile::flat_range(const std::string& name, std::int64_t begin,
                                       std::int64_t count) const {
  const TensorEntry* e = find(name);
  if (!e) throw CheckpointError(path() + ": no tensor \"" + name + "\"");
  if (begin < 0 || count < 0 || begin + count > e->numel())
    throw CheckpointError(path() + ": " + name + " has " + std::to_string(e->numel()) +
                          " elements, asked for [" + std::to_string(begin) + ", " +
                          std::to_string(begin + count) + ")");
  const at::ScalarType st = scalar_type_of(e->dtype);
  const auto size = static_cast<std::int64_t>(dtype_size(e->dtype));
  const std::uint8_t* p = map_->data() + header_.data_offset + e->begin + begin * size;
  auto opts = at::TensorOptions().dtype(st);
  if (count == 0) return at::empty({0}, opts);
  if (reinterpret_cast<std::uintptr_t>(p) % static_cast<std::uintptr_t>(size) != 0) {
    at::Tensor t = at::empty({count}, opts);
    std::memcpy(t.data_ptr(), p, static_cast<std::size_t>(count * size));
    return t;
  }
  auto keep = map_;
  return at::from_blob(
      const_cast<std::uint8_t*>(p), {count}, [keep](void*) {}, opts);
}

SafetensorsStreamWriter::SafetensorsStreamWriter(const std::string& path, std::vector<Entry> entries,
                                                 const std::map<std::string, std::string>& metadata,
                                                 std::size_t staging_bytes)
    : entries_(std::move(entries)),
      staging_bytes_(std::max<std::size_t>(staging_bytes, 1 << 16)),
      hash_(std::make_unique<Sha256>()) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  std::uint64_t offset = 0;
  for (const auto& e : entries_) {
    std::uint64_t bytes = at::elementSize(e.dtype);
    for (auto d : e.shape) bytes *= static_cast<std::uint64_t>(d);
    header[e.name] = {
        {"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8 != 0) h.push_back(' ');  // keep the data area 8-byte aligned
  std::uint8_t len[8];
  for (int i = 0; i < 8; ++i)
    len[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(h.size()) >> (8 * i));
  out_ = std::make_unique<fs::AtomicFileWriter>(path);
  put(len, 8);
  put(h.data(), h.size());
}

SafetensorsStreamWriter::~SafetensorsStreamWriter() = default;

void SafetensorsStreamWriter::put(const void* data, std::size_t n) {
  hash_->update(data, n);
  out_->write(data, n);
  bytes_ += n;
}

void SafetensorsStreamWriter::write(const at::Tensor& t) {
  TORCH_CHECK(next_ < entries_.size(), "SafetensorsStreamWriter: more tensors than entries");
  const Entry& e = entries_[next_++];
  TORCH_CHECK(t.sizes().vec() == e.shape, "SafetensorsStreamWriter: ", e.name, " has the wrong shape");
  at::Tensor flat = t.detach().reshape({-1});
  if (flat.is_cpu() && flat.scalar_type() == e.dtype && flat.is_contiguous()) {
    put(flat.data_ptr(), static_cast<std::size_t>(flat.numel()) * flat.element_size());
    return;
  }
  // Through the staging buffer, a piece at a time (pinned when the tensor is on a GPU).
  const std::int64_t es = static_cast<std::int64_t>(at::elementSize(e.dtype));
  const std::int64_t per = std::max<std::int64_t>(1, static_cast<std::int64_t>(staging_bytes_) / es);
  const std::int64_t need = std::min<std::int64_t>(per, flat.numel()) * es;
  if (!staging_.defined() || staging_.numel() < need)
    staging_ = at::empty({need}, at::TensorOptions().dtype(at::kByte).pinned_memory(flat.is_cuda()));
  for (std::int64_t off = 0; off < flat.numel(); off += per) {
    const std::int64_t n = std::min(per, flat.numel() - off);
    at::Tensor piece = staging_.narrow(0, 0, n * es).view(e.dtype);
    piece.copy_(flat.narrow(0, off, n));
    put(piece.data_ptr(), static_cast<std::size_t>(n * es));
  }
}

void SafetensorsStreamWriter::commit() {
  TORCH_CHECK(next_ == entries_.size(), "SafetensorsStreamWriter: ", entries_.size() - next_,
              " tensors missing");
  out_->commit();
  sha256_ = hash_->hex_digest();
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  std::vector<at::Tensor> contiguous;
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    std::uint64_t bytes = static_cast<std::uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", dtype_name(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(std::move(c));
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8 != 0) h.push_back(' ');  // keep the data area 8-byte aligned
  std::uint8_t len[8];
  for (int i = 0; i < 8; ++i)
    len[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(h.size()) >> (8 * i));
  fs::AtomicFileWriter w(path);
  w.write(len, 8);
  w.write(h.data(), h.size());
  for (const auto& c : contiguous)
    w.write(c.data_ptr(), static_cast<std::size_t>(c.numel()) * c.element_size());
  w.commit();
}

}  // namespace sft::model
