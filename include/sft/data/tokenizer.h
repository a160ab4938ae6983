// Tokenizer: text <-> ids for a model, from either kind of file models ship:
//   tokenizer.model  a sentencepiece model (LLaMA 1/2, the shipped tiny tokenizer)
//   tokenizer.json   a Hugging Face tokenizers byte-level BPE (LLaMA 3, Qwen2/2.5/3;
//                    data/hf_tokenizer.h says what is supported and what is refused)
// load() takes either file, or a model folder holding one (tokenizer.json first: LLaMA 3's
// folders also hold a tokenizer.model that is not sentencepiece's). Beside a tokenizer.json,
// tokenizer_config.json names the BOS, EOS and pad tokens and generation_config.json the
// ids generation stops on (LLaMA 3 Instruct: <|eot_id|> as well as <|end_of_text|>), when
// present: eos_ids() holds every one of them.
//
// Thread-safe for concurrent encode/decode (both kinds are immutable after load). encode()
// never adds BOS/EOS: chat templates place them explicitly, segment by segment, so that
// trained-token flags are exact by construction; a tokenizer.json's added tokens (<|eot_id|>,
// <|im_end|>, ...) written in the text are split out as their ids.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sft::data {

class HfTokenizer;

class Tokenizer {
 public:
  enum class Kind { kSentencepiece, kHfJson };
  // Loads a tokenizer.model, a tokenizer.json, or a folder holding one. Throws
  // sft::ConfigError naming the file when it is missing or not a tokenizer sft reads.
  static std::shared_ptr<const Tokenizer> load(const std::string& path);
  ~Tokenizer();

  Kind kind() const { return kind_; }
  std::vector<std::int32_t> encode(std::string_view text) const;
  // Encodes text that continues a sequence in the middle of a line: no dummy-prefix space
  // is added (sentencepiece otherwise adds one at the start of every encode call; a
  // byte-level BPE adds none).
  std::vector<std::int32_t> encode_continuation(std::string_view text) const;
  // As the library's own encode with its special tokens: sentencepiece and LLaMA 3 put BOS
  // first, Qwen adds nothing (`sft tokenize` without --no-special).
  std::vector<std::int32_t> encode_with_special(std::string_view text) const;
  // Special tokens (BOS, EOS, a tokenizer.json's special added tokens) are left out.
  std::string decode(const std::vector<std::int32_t>& ids) const;
  std::string piece(std::int32_t id) const;
  // The text bytes one token stands for, where the tokenizer knows them exactly (a
  // tokenizer.json: its ByteLevel bytes, an added token's content); nullopt for sentencepiece.
  std::optional<std::string> token_bytes(std::int32_t id) const;
  std::optional<std::int32_t> piece_id(std::string_view piece) const;  // exact piece, not unk

  std::int32_t bos_id() const { return bos_; }  // -1 when the tokenizer has none (Qwen)
  std::int32_t eos_id() const { return eos_; }  // the end-of-text token
  // Every id generation stops on: eos_id() and generation_config.json's eos_token_id.
  const std::vector<std::int32_t>& eos_ids() const { return eos_ids_; }
  std::int32_t pad_id() const { return pad_; }  // -1 when the model has none (Llama)
  std::int32_t unk_id() const { return unk_; }
  std::int32_t vocab_size() const { return vocab_; }
  bool is_control(std::int32_t id) const;
  bool adds_dummy_prefix() const { return dummy_prefix_; }
  const std::string& path() const { return path_; }  // the tokenizer file itself
  const std::string& sha256() const { return sha256_; }
  // The folder's chat template (tokenizer_config.json "chat_template", or chat_template.jinja),
  // "" when there is none.
  const std::string& chat_template() const { return chat_template_; }
  // The file chat_template() was read from ("" when there is none).
  const std::string& chat_template_path() const { return chat_template_path_; }

  // Writes the files a Hugging Face folder needs for this tokenizer into `dir`: the tokenizer
  // file itself and a tokenizer_config.json (with `chat_template`, a Jinja template, when
  // given) and, for sentencepiece, special_tokens_map.json, so that transformers' AutoTokenizer
  // loads it as the original; and generation_config.json with this tokenizer's BOS and every
  // EOS id (eos_ids()), so that transformers' generate stops where sft's does.
  // model_max_length > 0 is written for a sentencepiece model.
  void write_hf_files(const std::string& dir, const std::string& chat_template = "",
                      std::int64_t model_max_length = 0) const;

  struct Processor;  // sentencepiece's processor, kept out of this header

 private:
  Tokenizer() = default;
  void load_sentencepiece(const std::string& path);
  void load_hf(const std::string& path);
  Kind kind_ = Kind::kSentencepiece;
  std::unique_ptr<Processor> proc_;
  std::shared_ptr<const HfTokenizer> hf_;
  std::string path_, sha256_, chat_template_, chat_template_path_;
  std::string bos_token_, eos_token_, pad_token_;  // tokenizer_config.json's, as written
  std::int32_t bos_ = -1, eos_ = -1, pad_ = -1, unk_ = 0, vocab_ = 0;
  std::vector<std::int32_t> eos_ids_;
  bool dummy_prefix_ = false;
  std::vector<std::int32_t> sentinel_ids_;  // encode(kSentinel), for encode_continuation
};

}  // namespace sft::data
