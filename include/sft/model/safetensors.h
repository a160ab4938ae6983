// Safetensors files as tensors: read by mmap (zero-copy where the bytes are aligned), and
// written crash-safely (temporary file, fsync, rename) with __metadata__ {"format": "pt"}.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "sft/model/safetensors_header.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"

namespace sft::model {

class SafetensorsFile {
 public:
  // Maps and validates the whole header; throws CheckpointError.
  static std::shared_ptr<const SafetensorsFile> open(const std::string& path);

  const SafetensorsHeader& header() const { return header_; }
  const TensorEntry* find(const std::string& name) const;
  // A read-only view of the mapped bytes (keeps the mapping alive), or a copy when the
  // data is not aligned to its element size. Never write into the returned tensor.
  at::Tensor tensor(const std::string& name) const;
  // Elements [begin, begin + count) of the tensor, flattened (1-D): a view of only those
  // mapped bytes (a copy of only them when unaligned), so that a rank loading its shard of
  // a parameter touches only the pages it owns. Throws CheckpointError when out of range.
  at::Tensor flat_range(const std::string& name, std::int64_t begin, std::int64_t count) const;
  const std::string& path() const { return map_->path(); }

 private:
  std::shared_ptr<fs::MappedFile> map_;
  SafetensorsHeader header_;
  std::map<std::string, std::size_t> index_;
};

at::ScalarType scalar_type_of(const std::string& dtype);  // throws for unsupported dtypes
std::string dtype_name(at::ScalarType t);                 // "F32", "BF16", ...

// Writes one file tensor by tensor, crash-safely (fs::AtomicFileWriter): the header is
// known from the names, shapes and dtypes, so each tensor's bytes go out as it is handed
// over and nothing else of the file is held in memory. A tensor on the CPU in the entry's
// dtype is written from its own memory; any other (a GPU's, or one to convert) goes through
// a host staging buffer of at most `staging_bytes`, a piece at a time. The file's SHA-256 is
// computed as it is written.
class SafetensorsStreamWriter {
 public:
  struct Entry {
    std::string name;
    at::ScalarType dtype;
    std::vector<std::int64_t> shape;
  };
  SafetensorsStreamWriter(const std::string& path, std::vector<Entry> entries,
                          const std::map<std::string, std::string>& metadata = {{"format", "pt"}},
                          std::size_t staging_bytes = std::size_t(64) << 20);
  ~SafetensorsStreamWriter();
  // The next entry's tensor (any device; converted to the entry's dtype).
  void write(const at::Tensor& t);
  void commit();  // REQUIRES: every entry written
  // After commit(): the file's size and SHA-256 (hex).
  std::uint64_t bytes() const { return bytes_; }
  const std::string& sha256() const { return sha256_; }

 private:
  void put(const void* data, std::size_t n);
  std::vector<Entry> entries_;
  std::size_t next_ = 0;
  std::unique_ptr<fs::AtomicFileWriter> out_;
  std::size_t staging_bytes_;
  at::Tensor staging_;  // bytes, allocated at the first tensor that needs it
  std::unique_ptr<Sha256> hash_;
  std::uint64_t bytes_ = 0;
  std::string sha256_;
};

// Writes tensors in the given order. REQUIRES: names unique; tensors on CPU or not (copied).
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace sft::model
