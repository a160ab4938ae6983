// ChatTemplate: renders a Record as the text a model sees and encodes it to token ids with
// exact trained-token flags.
//
// A rendering is a list of Segments (text or a special token), each trained or not. Token
// ids are built segment by segment, so the flags are exact by construction: the loss covers
// the assistant's tokens and the end-of-turn token, nothing else, and no response template
// is searched for in the text. The prompt for generating turn t is, segment for segment,
// the prefix of the training sample before turn t's answer, so training and inference see
// identical prompt ids (qwen3 aside: its official template puts the empty think block
// before the last answer only, and the generation prompt always ends with it).
//
// Templates (rendering byte-identical to the reference named beside each):
//   vicuna_v1.1  FastChat conversation.py "vicuna_v1.1" (SeparatorStyle.ADD_COLON_TWO)
//   llama-2      FastChat conversation.py "llama-2" (SeparatorStyle.LLAMA2)
//   chatml       FastChat conversation.py "qwen-7b-chat" (SeparatorStyle.CHATML)
//   alpaca       Stanford Alpaca's PROMPT_DICT (train.py), output + eos; not FastChat's
//                "alpaca", which puts "### Instruction: " and the text on one line
//   raw          "<user>\n<assistant></s>" per turn, no system text; not FastChat's "raw"
//   llama-3      Meta-Llama-3-Instruct's tokenizer_config.json chat_template
//   llama-3.1    Llama-3.1-Instruct's: a system turn always, opening with "Cutting Knowledge
//                Date: December 2023\nToday Date: 26 Jul 2024\n\n" (the date the template
//                renders when none is passed); contents trimmed, as 3.0's
//   qwen2.5      Qwen2.5-Instruct's: ChatML, "You are Qwen, created by Alibaba Cloud. You are
//                a helpful assistant." when the conversation has no system message
//   qwen3        Qwen3's (hybrid thinking): ChatML, no default system message; the answer
//                after the last user turn opens with "<think>\n\n</think>\n\n"; earlier
//                answers keep no thinking; generation prompts are enable_thinking=False's
// All as transformers' apply_chat_template renders them (tools and tool calls aside):
// tests/clients/fastchat_render.py checks the FastChat ones against fschat and
// tests/clients/hf_chat_render.py the others against transformers.
//
// The llama-3 and qwen templates write their special tokens as text; each must be one added
// token of the tokenizer (check_tokenizer()), and BOS/EOS segments are not used: the text
// "<|begin_of_text|>" is the BOS, "<|eot_id|>"/"<|im_end|>" end a turn. Their renderings train the
// answer and its end-of-turn token, never the header before it, nor qwen3's empty think
// block (the prompt generation feeds); an answer's own "<think>...</think>" is trained.
// With a tokenizer.json, consecutive text segments are encoded as one text (as tokenizers
// encodes the rendered conversation), so ids equal tokenizer(render, add_special_tokens=
// False)'s; a token spanning an untrained and a trained segment is trained.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sft/config/choices.h"
#include "sft/data/record.h"
#include "sft/data/tokenizer.h"

namespace sft::data {

enum class SegmentKind { kText, kBos, kEos };

struct Segment {
  SegmentKind kind;
  std::string text;  // for kBos/kEos the literal piece text ("<s>", "</s>")
  bool trained;      // a training target: the loss covers its tokens
};

struct Encoded {
  std::vector<std::int32_t> ids;
  // 1 where the token is trained (a training target), 0 elsewhere: Segment::trained per
  // token, kept under this name through TokenizedDataset::trained() to make_batch().
  std::vector<std::uint8_t> trained;
};

class ChatTemplate {
 public:
  // `system_message` replaces the default one (for llama-3, llama-3.1 and qwen3, which have
  // none, it becomes the system message of every conversation without its own). By name:
  // ConfigError for an unknown name. kAuto ("auto") needs `tok`: the template is detect(*tok).
  static ChatTemplate create(config::Template kind, std::optional<std::string> system_message = std::nullopt,
                             const Tokenizer* tok = nullptr);
  static ChatTemplate create(const std::string& name,
                             std::optional<std::string> system_message = std::nullopt,
                             const Tokenizer* tok = nullptr);
  static const std::vector<std::string>& names();

  // template: auto. The built-in whose rendering the tokenizer folder's chat template has
  // (tokenizer_config.json "chat_template" or chat_template.jinja): recognised by the
  // fingerprint of its source (sha256 of the text with CRLF made LF and the ends trimmed)
  // among the official templates that tests/clients/hf_chat_render.py proves render as a
  // built-in, and the jinja() of every built-in (its default system message). Anything else
  // is a ConfigError naming the file and the built-ins tried: sft has no Jinja interpreter.
  static config::Template detect(const Tokenizer& tok);
  static std::string fingerprint(std::string_view jinja_source);

  config::Template kind() const { return kind_; }
  std::string name() const { return config::name(kind_); }
  const std::string& default_system() const { return system_; }
  // Whether a conversation without its own system message gets default_system().
  bool has_default_system() const { return has_system_; }

  // The template's special tokens written as text, each of which must be one added token
  // of the tokenizer (else it would be tokenized as plain text); empty for the others.
  std::vector<std::string> required_tokens() const;
  // ConfigError naming the template, the tokenizer file and the tokens it lacks.
  void check_tokenizer(const Tokenizer& tok) const;

  // A Jinja chat template (written for sft, not a copy of a model's) that transformers'
  // apply_chat_template(messages, add_generation_prompt=...) renders as render() and
  // generation_segments() do, for user/assistant/system messages; this template's system
  // message is its default. BOS/EOS segments appear as bos_token/eos_token, and the leading
  // BOS is left out as join() leaves it out (the tokenizer adds it). alpaca renders a user
  // message as an instruction without input.
  std::string jinja() const;

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
  std::vector<Segment> build_hf(const Record& r, std::size_t pairs, bool generation) const;
  config::Template kind_ = config::Template::kVicunaV11;
  std::string system_;
  bool has_system_ = true;
};

}  // namespace sft::data
