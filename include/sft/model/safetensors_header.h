// Validation of a safetensors file's header, independent of LibTorch (so it can be fuzzed).
//
// Format (huggingface/safetensors): 8 bytes little-endian header length N, N bytes of a
// UTF-8 JSON object {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
// {str: str}}, then the data area; offsets are relative to its start. Nothing is trusted
// before it is checked: N against the file size, well-formed JSON without duplicate names,
// known dtypes, non-negative shapes without overflow, offsets inside the data area, byte
// length = dtype size x element count, and tensors tiling the data area with no overlap
// and no hole (as the reference implementation requires). Each failure is a
// CheckpointError naming the file and the tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace sft::model {

struct TensorEntry {
  std::string name;
  std::string dtype;  // F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL F8_E4M3 F8_E5M2
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  // byte range within the data area
  std::int64_t numel() const;
};

struct SafetensorsHeader {
  std::uint64_t header_len = 0;
  std::uint64_t data_offset = 0;     // 8 + header_len
  std::vector<TensorEntry> tensors;  // in data order
  std::map<std::string, std::string> metadata;
};

// Size in bytes of one element, or 0 for an unknown dtype.
std::size_t dtype_size(const std::string& dtype);

// REQUIRES: data points to the whole file (size bytes). Throws sft::CheckpointError.
SafetensorsHeader parse_safetensors_header(const std::uint8_t* data, std::size_t size,
                                           const std::string& file);

}  // namespace sft::model
