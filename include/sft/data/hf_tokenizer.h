// HfTokenizer: a Hugging Face tokenizer.json byte-level BPE tokenizer (the LLaMA 3 and
// Qwen2/2.5/3 families), giving the ids of the `tokenizers` library, id for id
// (tests/data/hf_tokenizer_test.cpp compares them on real data and a hostile corpus).
//
// Immutable after load(); thread-safe: any number of threads may encode and decode at once
// (each thread keeps its own cache of encoded words, and its own regex match state).
//
// What a file may hold: model BPE (merges as "a b" strings or ["a", "b"] pairs,
// ignore_merges, unk_token, fuse_unk; dropout null or 0); normalizer null, NFC or a
// Sequence of those; pre_tokenizer Split (Regex or String pattern, any behavior, invert)
// steps then one ByteLevel (add_prefix_space, use_regex) last, alone or in a Sequence;
// post_processor null, ByteLevel, one TemplateProcessing (its single template; pairs of
// texts are not encoded), or a Sequence of those; decoder ByteLevel or a Sequence of
// ByteLevel; added_tokens with lstrip, rstrip, normalized and special. Regexes run on PCRE2
// and NFC on utf8proc, each made to match what tokenizers' own engines (Oniguruma, older
// Unicode tables) do: src/data/hf_regex.h, src/data/hf_unicode_sets.h.
//
// Everything else is refused at load with sft::ConfigError (exit code 2) naming the file
// and the JSON path ("model.merges[17]: ..."): another model type, normalizer,
// pre-tokenizer, decoder or post-processor; unknown fields; byte_fallback, a
// continuing_subword_prefix or end_of_word_suffix, dropout > 0; single_word added tokens,
// and an rstrip one beside one that begins with whitespace; truncation or padding; a regex
// construct whose meaning differs between Oniguruma and PCRE2; duplicate ids, merges of
// tokens not in the vocab, added-token ids other than the ones tokenizers would assign,
// ids of 2^24 or more; files above kMaxFileBytes. Nothing refused is approximated.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sft::data {

class HfTokenizer {
 public:
  static constexpr std::uint64_t kMaxFileBytes = 256ULL << 20;  // larger files are refused unread

  // Loads a tokenizer.json. Throws sft::ConfigError naming the file (and the JSON path) for a
  // missing, oversized, malformed or unsupported file.
  static std::shared_ptr<const HfTokenizer> load(const std::string& path);
  ~HfTokenizer();

  // tokenizers' encode(text, add_special_tokens=False).ids: added tokens (special or not)
  // are split out first and never merged across, then the normalizer, the pre-tokenizer
  // and BPE run on each remaining piece. Text that is not valid UTF-8 (tokenizers takes
  // only Rust strings) throws sft::DataError naming the first bad byte's offset.
  std::vector<std::int32_t> encode(std::string_view text) const;
  // encode_with_special: encode(text, add_special_tokens=True): the post-processor's special
  // tokens around encode(text) (LLaMA 3: <|begin_of_text|> first; Qwen: none).
  std::vector<std::int32_t> encode_with_special(std::string_view text) const;
  // tokenizers' decode(ids, skip_special_tokens=skip_special) with the ByteLevel decoder:
  // ids of no token are skipped, and bytes that are not valid UTF-8 become U+FFFD.
  std::string decode(const std::vector<std::int32_t>& ids, bool skip_special = false) const;

  std::optional<std::int32_t> token_id(std::string_view token) const;  // exact: vocab or added token
  std::string token(std::int32_t id) const;  // the token's string in the file; "" for an id of no token
  // The bytes the ByteLevel decoder gives for one token (an added token: its content); "" for
  // an id of no token. encode(text)'s tokens' bytes, in order, spell the normalized text.
  std::string token_bytes(std::int32_t id) const;
  std::int32_t vocab_size() const;             // the largest id + 1 (vocab and added tokens)
  bool is_special(std::int32_t id) const;      // an added token marked special
  std::optional<std::int32_t> bos_id() const;  // the post-processor's leading special token, if any
  const std::string& path() const;
  const std::string& sha256() const;  // of the file's bytes

  struct Impl;  // kept out of this header (PCRE2, the tables)

 private:
  explicit HfTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sft::data
