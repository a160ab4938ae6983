// SHA-256 (FIPS 180-4) for checkpoint manifests and data-cache keys, and a small
// 64-bit mixer for deriving independent seeds.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sft {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, std::size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  std::array<std::uint8_t, 32> digest();  // finalises; the object is then spent
  std::string hex_digest();

 private:
  void compress(const std::uint8_t* block);
  std::uint32_t h_[8];
  std::uint8_t buf_[64];
  std::size_t buf_len_ = 0;
  std::uint64_t total_ = 0;
};

std::string sha256_hex(std::string_view data);
// Lower-case hexadecimal of `n` bytes (two digits a byte).
std::string hex(const void* data, std::size_t n);
std::string sha256_file(const std::string& path);  // streams the file; throws sft::Error

// SplitMix64 finaliser: a bijective 64-bit mix, used to combine seeds with indices.
constexpr std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
constexpr std::uint64_t seed_combine(std::uint64_t a, std::uint64_t b) { return mix64(a ^ mix64(b)); }
std::uint64_t seed_from_string(std::string_view s);  // FNV-1a, then mixed

}  // namespace sft
