// The byte-level BPE model of a tokenizer.json: GPT-2's byte alphabet and the merge loop.
//
// Words arrive as raw bytes (a pre-token before ByteLevel's byte-to-character mapping): the
// mapping is a bijection, so every table here is keyed by bytes and ids, and the mapped
// string is never built. Merges apply as tokenizers' BPE applies them: repeatedly the pair
// of lowest rank, the leftmost among equals.
//
// Immutable once built; encode_word() is safe from several threads. Each thread keeps its
// own cache of encoded words (as tokenizers does), tagged with the model's serial number so
// that a model later allocated at the same address never sees another's entries.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sft::data::hf {

// GPT-2's bytes_to_unicode(): the character byte b stands for in a byte-level token.
char32_t byte_to_char(std::uint8_t b);
// The byte that character c stands for, or -1 when c is not in the byte-level alphabet.
int char_to_byte(char32_t c);
// The bytes a token's string stands for when every character is in the alphabet.
std::optional<std::string> token_bytes(std::string_view token);

struct TransparentHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, std::int32_t, TransparentHash, std::equal_to<>>;

class Bpe {
 public:
  Bpe();
  // The loader's calls, in this order. set_vocab: the model's token -> id (the file's strings).
  void set_vocab(const StringIdMap& vocab, bool ignore_merges, std::optional<std::int32_t> unk_id,
                 bool fuse_unk);
  // A merge of rank `rank`: (left, right) -> merged. A later merge of the same pair replaces
  // an earlier one (tokenizers collects merges into a map).
  void add_merge(std::int32_t left, std::int32_t right, std::uint32_t rank, std::int32_t merged);

  // Appends the ids of one pre-token given as raw bytes. REQUIRES: !word.empty().
  void encode_word(std::string_view word, std::vector<std::int32_t>& out) const;

 private:
  struct Merge {
    std::uint32_t rank;
    std::int32_t merged;
  };
  const Merge* find_merge(std::int32_t left, std::int32_t right) const;
  void grow_merges();
  void merge_short(std::vector<std::int32_t>& symbols) const;
  void merge_long(std::vector<std::int32_t>& symbols) const;
  void initial_symbols(std::string_view word, std::vector<std::int32_t>& symbols) const;

  std::int32_t byte_id_[256];  // the id of each byte's character; -1 when not in the vocab
  StringIdMap whole_words_;    // raw bytes -> id, for ignore_merges; empty otherwise
  bool ignore_merges_ = false;
  std::optional<std::int32_t> unk_id_;
  bool fuse_unk_ = false;
  // Open addressing, linear probing: key (left << 32 | right), kEmpty marks a free slot.
  std::vector<std::uint64_t> merge_keys_;
  std::vector<Merge> merge_values_;
  std::size_t merge_count_ = 0;
  std::uint64_t serial_;  // tags this model's entries in the per-thread word caches
};

}  // namespace sft::data::hf
