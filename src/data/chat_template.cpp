#include "sft/data/chat_template.h"

#include "sft/util/error.h"

namespace sft::data {
namespace {

// FastChat's vicuna_v1.1 system message (conversation.py, register_conv_template).
const char* kVicunaSystem =
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.";
// FastChat registers ChatML-style templates (qwen-7b-chat) with this system message.
const char* kChatmlSystem = "You are a helpful assistant.";
// Stanford Alpaca train.py, PROMPT_DICT["prompt_input"] / ["prompt_no_input"] preambles.
const char* kAlpacaNoInput =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.";
const char* kAlpacaInput =
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.";

class SegmentList {
 public:
  void bos() { segs_.push_back({SegmentKind::kBos, "<s>", false}); }
  void eos() { segs_.push_back({SegmentKind::kEos, "</s>", true}); }
  void masked(const std::string& t) { text(t, false); }
  void trained(const std::string& t) { text(t, true); }
  std::vector<Segment> take() { return std::move(segs_); }

 private:
  // Adjacent text of the same kind merges, so the segmentation depends only on where the
  // mask changes, never on how a template happens to build its strings.
  void text(const std::string& t, bool train) {
    if (t.empty()) return;
    if (!segs_.empty() && segs_.back().kind == SegmentKind::kText && segs_.back().trained == train)
      segs_.back().text += t;
    else
      segs_.push_back({SegmentKind::kText, t, train});
  }
  std::vector<Segment> segs_;
};

}  // namespace

const std::vector<std::string>& ChatTemplate::names() {
  static const std::vector<std::string> n = [] {
    std::vector<std::string> v;
    for (const auto& c : config::Choices<config::Template>::all) v.emplace_back(c.name);
    return v;
  }();
  return n;
}

ChatTemplate ChatTemplate::create(const std::string& name, std::optional<std::string> system_message) {
  const auto kind = config::parse_choice<config::Template>(name);
  if (!kind)
    throw ConfigError("template: unknown template \"" + name + "\" (known: " + config::choice_list<config::Template>() + ")");
  return create(*kind, std::move(system_message));
}

ChatTemplate ChatTemplate::create(config::Template kind, std::optional<std::string> system_message) {
  ChatTemplate t;
  t.kind_ = kind;
  switch (kind) {
    case config::Template::kVicunaV11: t.system_ = kVicunaSystem; break;
    case config::Template::kChatml: t.system_ = kChatmlSystem; break;
    case config::Template::kLlama2: t.system_ = ""; break;  // FastChat's Conversation default
    case config::Template::kAlpaca: case config::Template::kRaw: t.system_ = ""; break;
  }
  if (system_message) t.system_ = *system_message;
  return t;
}

namespace {

// "file:line: record 3, id x" for error messages; records built in code have no file.
std::string record_name(const Record& r) {
  const Origin& o = r.origin;
  std::string id = o.id.empty() ? "" : ", id " + o.id;
  if (o.file.empty()) return "record " + std::to_string(o.index) + id;
  return o.where() + ": record " + std::to_string(o.index) + id;
}

}  // namespace

std::vector<Segment> ChatTemplate::segments(const Record& r) const {
  SegmentList s;
  if (r.is_text) {
    s.bos();
    s.trained(r.text);
    s.eos();
    return s.take();
  }
  if (r.turns.size() < 2)
    throw DataError(record_name(r) + ": conversation has no assistant answer to train on (only its generation "
                    "prompt can be rendered)");
  return build(r, r.turns.size() / 2, false);
}

std::vector<Segment> ChatTemplate::generation_segments(const Record& r, std::size_t turn) const {
  if (r.is_text) throw Error(record_name(r) + ": a raw-text record has no user turns to answer");
  if (2 * turn >= r.turns.size())
    throw Error(record_name(r) + ": no user turn " + std::to_string(turn) + " (the conversation has " +
                std::to_string((r.turns.size() + 1) / 2) + ")");
  return build(r, turn, true);
}

bool ChatTemplate::awaits_answer(const Record& r) { return !r.is_text && r.turns.size() % 2 == 1; }

std::vector<Segment> ChatTemplate::generation_segments(const Record& r) const {
  if (!awaits_answer(r))
    throw Error(record_name(r) + ": the conversation does not end with an unanswered user turn");
  return build(r, r.turns.size() / 2, true);
}

// Renders `pairs` complete (user, assistant) pairs, then, when `generation`, the next user
// turn and the assistant's opening tag (FastChat: append_message(roles[1], None)).
std::vector<Segment> ChatTemplate::build(const Record& r, std::size_t pairs, bool generation) const {
  SegmentList s;
  const std::string& system = r.has_system ? r.system : system_;
  auto user = [&](std::size_t i) { return user_content(r, 2 * i); };
  auto answer = [&](std::size_t i) { return r.turns[2 * i + 1].content; };
  const std::size_t n = pairs + (generation ? 1 : 0);
  s.bos();

  if (kind_ == config::Template::kVicunaV11) {
    // ADD_COLON_TWO, sep=" ", sep2="</s>":
    //   ret = system + sep; per message: role + ": " + message + seps[i % 2], or role + ":" if empty
    s.masked(system + " ");
    for (std::size_t i = 0; i < n; ++i) {
      s.masked(user(i).empty() ? "USER:" : "USER: " + user(i) + " ");
      if (i < pairs && !answer(i).empty()) {
        s.masked("ASSISTANT:");
        s.trained(" " + answer(i));
        s.eos();
      } else {
        s.masked("ASSISTANT:");
      }
    }
  } else if (kind_ == config::Template::kLlama2) {
    // LLAMA2, system_template "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n", sep=" ", sep2=" </s><s>":
    //   ret = system_prompt if system else "[INST] "; message 0: message + " ";
    //   later: tag + " " + message + seps[i % 2]; empty message: tag
    s.masked(system.empty() ? "[INST] " : "[INST] <<SYS>>\n" + system + "\n<</SYS>>\n\n");
    for (std::size_t i = 0; i < n; ++i) {
      if (i == 0) s.masked(user(i).empty() ? "[INST]" : user(i) + " ");
      else s.masked(user(i).empty() ? "[INST]" : "[INST] " + user(i) + " ");
      s.masked("[/INST]");
      if (i < pairs && !answer(i).empty()) {
        s.trained(" " + answer(i) + " ");
        s.eos();
        s.bos();
      }
    }
  } else if (kind_ == config::Template::kChatml) {
    // CHATML, system_template "<|im_start|>system\n{system}", sep="<|im_end|>":
    //   ret = system_prompt + sep + "\n"; per message: role + "\n" + message + sep + "\n",
    //   or role + "\n" if empty
    s.masked("<|im_start|>system\n" + system + "<|im_end|>\n");
    for (std::size_t i = 0; i < n; ++i) {
      s.masked(user(i).empty() ? "<|im_start|>user\n" : "<|im_start|>user\n" + user(i) + "<|im_end|>\n");
      s.masked("<|im_start|>assistant\n");
      if (i < pairs && !answer(i).empty()) {
        s.trained(answer(i) + "<|im_end|>");
        s.masked("\n");
      }
    }
  } else if (kind_ == config::Template::kAlpaca) {
    // Stanford Alpaca: PROMPT_DICT preamble + "\n\n### Instruction:\n{instruction}\n\n"
    // ["### Input:\n{input}\n\n"] "### Response:\n", then output + eos. Later turns repeat
    // the instruction/response blocks.
    const bool has_input = !r.input.empty();
    std::string preamble = r.has_system || !system_.empty() ? system : (has_input ? kAlpacaInput : kAlpacaNoInput);
    for (std::size_t i = 0; i < n; ++i) {
      const std::string& ins = r.turns[2 * i].content;
      if (i == 0) {
        s.masked(preamble + "\n\n### Instruction:\n" + ins + "\n\n");
        if (has_input) s.masked("### Input:\n" + r.input + "\n\n");
        s.masked("### Response:\n");
      } else {
        s.masked("\n\n### Instruction:\n" + ins + "\n\n### Response:\n");
      }
      if (i < pairs) {
        s.trained(answer(i));
        s.eos();
      }
    }
  } else {  // raw
    for (std::size_t i = 0; i < n; ++i) {
      s.masked(user(i) + "\n");
      if (i < pairs) {
        s.trained(answer(i));
        s.eos();
      }
    }
  }
  return s.take();
}

std::string ChatTemplate::join(const std::vector<Segment>& segs, bool with_bos) {
  std::string out;
  for (std::size_t i = 0; i < segs.size(); ++i) {
    if (i == 0 && segs[i].kind == SegmentKind::kBos && !with_bos) continue;
    out += segs[i].text;
  }
  return out;
}

Encoded ChatTemplate::encode(const std::vector<Segment>& segs, const Tokenizer& tok) {
  Encoded e;
  bool after_text = false;
  for (const auto& seg : segs) {
    if (seg.kind == SegmentKind::kBos) {
      if (tok.bos_id() >= 0) {
        e.ids.push_back(tok.bos_id());
        e.mask.push_back(seg.trained ? 1 : 0);
      }
      after_text = false;
    } else if (seg.kind == SegmentKind::kEos) {
      if (tok.eos_id() >= 0) {
        e.ids.push_back(tok.eos_id());
        e.mask.push_back(seg.trained ? 1 : 0);
      }
      after_text = false;
    } else {
      std::vector<std::int32_t> ids = after_text ? tok.encode_continuation(seg.text) : tok.encode(seg.text);
      e.ids.insert(e.ids.end(), ids.begin(), ids.end());
      e.mask.insert(e.mask.end(), ids.size(), seg.trained ? 1 : 0);
      after_text = true;
    }
  }
  return e;
}

std::vector<std::string> ChatTemplate::stop_strings() const {
  switch (kind_) {
    case config::Template::kChatml: return {"<|im_end|>"};
    case config::Template::kVicunaV11: return {"</s>", "USER:"};
    case config::Template::kLlama2: return {"</s>", "[INST]"};
    case config::Template::kAlpaca: return {"</s>", "### Instruction:"};
    case config::Template::kRaw: break;
  }
  return {"</s>"};
}

}  // namespace sft::data
