// Tokenizer: a sentencepiece model (Llama-style .model file).
//
// Thread-safe for concurrent encode/decode (sentencepiece's processor is immutable after
// load). encode() never adds BOS/EOS: chat templates place them explicitly, segment by
// segment, so that loss masks are exact by construction.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sft::data {

class Tokenizer {
 public:
  // Loads `model_path`. Throws sft::Error naming the file when it is missing or not a
  // sentencepiece model.
  static std::shared_ptr<const Tokenizer> load(const std::string& model_path);
  ~Tokenizer();

  std::vector<std::int32_t> encode(std::string_view text) const;
  // Encodes text that continues a sequence in the middle of a line: no dummy-prefix space
  // is added (sentencepiece otherwise adds one at the start of every encode call).
  std::vector<std::int32_t> encode_continuation(std::string_view text) const;
  std::string decode(const std::vector<std::int32_t>& ids) const;
  std::string piece(std::int32_t id) const;
  std::optional<std::int32_t> piece_id(std::string_view piece) const;  // exact piece, not unk

  std::int32_t bos_id() const { return bos_; }
  std::int32_t eos_id() const { return eos_; }
  std::int32_t pad_id() const { return pad_; }  // -1 when the model has none (Llama)
  std::int32_t unk_id() const { return unk_; }
  std::int32_t vocab_size() const { return vocab_; }
  bool is_control(std::int32_t id) const;
  bool adds_dummy_prefix() const { return dummy_prefix_; }
  const std::string& path() const { return path_; }
  const std::string& sha256() const { return sha256_; }

  struct Processor;  // sentencepiece's processor, kept out of this header

 private:
  Tokenizer() = default;
  std::unique_ptr<Processor> proc_;
  std::string path_, sha256_;
  std::int32_t bos_ = -1, eos_ = -1, pad_ = -1, unk_ = 0, vocab_ = 0;
  bool dummy_prefix_ = false;
  std::vector<std::int32_t> sentinel_ids_;  // encode(kSentinel), for encode_continuation
};

}  // namespace sft::data
