// ChatTemplate: renders a Record as the text a model sees and encodes it to token ids with
// an exact loss mask.
//
// A rendering is a list of Segments (text or a special token), each trained or not. Token
// ids are built segment by segment, so the mask is exact by construction: the loss covers
// the assistant's tokens and the end-of-turn token, nothing else, and no response template
// is searched for in the text. The prompt for generating turn t is, segment for segment,
// the prefix of the training sample before turn t's answer, so training and inference see
// identical prompt ids.
//
// Templates (rendering byte-identical to the reference named beside each):
//   vicuna_v1.1  FastChat conversation.py "vicuna_v1.1" (SeparatorStyle.ADD_COLON_TWO)
//   llama-2      FastChat conversation.py "llama-2" (SeparatorStyle.LLAMA2)
//   chatml       FastChat conversation.py "qwen-7b-chat" (SeparatorStyle.CHATML)
//   alpaca       Stanford Alpaca's PROMPT_DICT (train.py), output + eos; not FastChat's
//                "alpaca", which puts "### Instruction: " and the text on one line
//   raw          "<user>\n<assistant></s>" per turn, no system text; not FastChat's "raw"
// tests/clients/fastchat_render.py checks the three FastChat ones against fschat.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sft/config/choices.h"
#include "sft/data/record.h"
#include "sft/data/tokenizer.h"

namespace sft::data {

enum class SegmentKind { kText, kBos, kEos };

struct Segment {
  SegmentKind kind;
  std::string text;  // for kBos/kEos the literal piece text ("<s>", "</s>")
  bool trained;
};

struct Encoded {
  std::vector<std::int32_t> ids;
  std::vector<std::uint8_t> mask;  // 1 where the token is a training target
};

class ChatTemplate {
 public:
  // `system_message` replaces the default one. By name: ConfigError for an unknown name.
  static ChatTemplate create(config::Template kind, std::optional<std::string> system_message = std::nullopt);
  static ChatTemplate create(const std::string& name, std::optional<std::string> system_message = std::nullopt);
  static const std::vector<std::string>& names();

  std::string name() const { return config::name(kind_); }
  const std::string& default_system() const { return system_; }

  // The whole record, for training. Raw-text records ignore the template. An unanswered
  // last user turn is left out; a conversation without an answer throws DataError.
  std::vector<Segment> segments(const Record& r) const;
  // The prompt inference feeds to answer user turn `turn` (0-based, counting user turns),
  // with the earlier turns' answers taken from the record.
  std::vector<Segment> generation_segments(const Record& r, std::size_t turn) const;
  // For a conversation ending with an unanswered user turn: the prompt for its answer, i.e.
  // the whole conversation so far (FastChat: append_message(roles[1], None); get_prompt()).
  std::vector<Segment> generation_segments(const Record& r) const;
  // Whether the record is a conversation whose last turn is the user's.
  static bool awaits_answer(const Record& r);

  // Joined segment texts without the leading BOS: FastChat's get_prompt(), byte for byte.
  static std::string join(const std::vector<Segment>& segs, bool with_bos = false);
  std::string render(const Record& r) const { return join(segments(r)); }

  // Text segments that follow a text segment are encoded without sentencepiece's
  // dummy-prefix space; those that follow a special token (or open the sequence) keep it,
  // as Hugging Face's Llama tokenizer does around special tokens.
  static Encoded encode(const std::vector<Segment>& segs, const Tokenizer& tok);

  // Strings that end an assistant turn in generated text (besides the EOS token).
  std::vector<std::string> stop_strings() const;

 private:
  std::vector<Segment> build(const Record& r, std::size_t pairs, bool generation) const;
  config::Template kind_ = config::Template::kVicunaV11;
  std::string system_;
};

}  // namespace sft::data
