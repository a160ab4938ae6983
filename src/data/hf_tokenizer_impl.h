// HfTokenizer's parts, shared by hf_tokenizer.cpp (the encode/decode pipeline) and
// hf_tokenizer_load.cpp (reading and validating tokenizer.json).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/hf_bpe.h"
#include "data/hf_regex.h"
#include "sft/data/hf_tokenizer.h"

namespace sft::data {

namespace hf {

struct AddedToken {
  std::string content;
  std::int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false, normalized = false;
};

// Leftmost-longest, non-overlapping matching of added tokens' contents (as tokenizers'
// aho-corasick with MatchKind::LeftmostLongest): a byte trie.
class AddedMatcher {
 public:
  void add(std::string_view content, std::int32_t token);  // the first of equal contents wins
  bool empty() const { return nodes_.size() == 1; }
  // The leftmost match starting at or after `from`, the longest there: {begin, end, token}.
  struct Match {
    std::size_t begin, end;
    std::int32_t token;
  };
  std::optional<Match> find(std::string_view text, std::size_t from) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, std::int32_t>> next;  // sorted by byte
    std::int32_t token = -1;
  };
  std::int32_t child(std::int32_t node, unsigned char b) const;
  std::vector<Node> nodes_{1};
  bool first_byte_[256] = {};
};

// NFC (utf8proc), the NFC normalizer's work.
std::string nfc_normalize(std::string_view s);

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct SplitStep {
  std::unique_ptr<const Regex> pattern;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
};

}  // namespace hf

struct HfTokenizer::Impl {
  std::string path, sha256;

  // Model: vocab (the file's strings), BPE, and every id's string and decoded bytes.
  hf::StringIdMap vocab;
  hf::Bpe bpe;
  std::vector<std::string> id_token;  // "" for ids of no token
  std::vector<std::string> id_bytes;  // the ByteLevel decoder's bytes of each token
  std::vector<bool> id_present, id_special;

  // Added tokens: matched in the raw text (normalized == false) or after the normalizer.
  std::vector<hf::AddedToken> added;
  hf::StringIdMap added_ids;  // content -> id
  hf::AddedMatcher raw_matcher, normalized_matcher;

  bool nfc = false;                                   // the normalizer (NFC is idempotent: once is enough)
  std::vector<hf::SplitStep> splits;                  // pre-tokenizer steps before ByteLevel
  bool add_prefix_space = false;                      // ByteLevel
  std::unique_ptr<const hf::Regex> byte_level_regex;  // GPT-2's, when ByteLevel's use_regex
  std::vector<std::int32_t> prefix_ids, suffix_ids;   // TemplateProcessing's single template
  std::optional<std::int32_t> bos;
  int byte_level_decoders = 1;  // a Sequence may repeat ByteLevel

  // Builds everything from the file; throws ConfigError (hf_tokenizer_load.cpp).
  static std::unique_ptr<Impl> load(const std::string& path);

  void encode(std::string_view text, std::vector<std::int32_t>& out) const;

 private:
  void encode_normalized(std::string_view piece, std::vector<std::int32_t>& out) const;
  void pre_tokenize(std::string_view piece, std::vector<std::int32_t>& out) const;
  void byte_level(std::string_view piece, std::vector<std::int32_t>& out) const;
};

// GPT-2's pre-tokenizer regex, which ByteLevel applies when use_regex is true.
extern const char* const kGpt2Pattern;

}  // namespace sft::data
