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
// Qwen2.5-Instruct's chat template, when the conversation has no system message.
const char* kQwen25System = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
// Llama-3.1-Instruct's chat template opens its system turn with these lines; the date is the
// template's default date_string (transformers passes none unless asked).
const char* kLlama31SystemHead = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
// Stanford Alpaca train.py, PROMPT_DICT["prompt_input"] / ["prompt_no_input"] preambles.
const char* kAlpacaNoInput =
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.";
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
  // trained flag changes, never on how a template happens to build its strings.
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

ChatTemplate ChatTemplate::create(const std::string& name, std::optional<std::string> system_message,
                                  const Tokenizer* tok) {
  const auto kind = config::parse_choice<config::Template>(name);
  if (!kind)
    throw ConfigError("template: unknown template \"" + name +
                      "\" (known: " + config::choice_list<config::Template>() + ")");
  return create(*kind, std::move(system_message), tok);
}

ChatTemplate ChatTemplate::create(config::Template kind, std::optional<std::string> system_message,
                                  const Tokenizer* tok) {
  if (kind == config::Template::kAuto) {
    if (!tok)
      throw ConfigError(
          "template: auto takes the template of the tokenizer's folder, and no tokenizer was given "
          "(name a template: " +
          config::choice_list<config::Template>() + ")");
    kind = detect(*tok);
  }
  ChatTemplate t;
  t.kind_ = kind;
  switch (kind) {
    case config::Template::kVicunaV11: t.system_ = kVicunaSystem; break;
    case config::Template::kChatml: t.system_ = kChatmlSystem; break;
    case config::Template::kLlama2: t.system_ = ""; break;  // FastChat's Conversation default
    case config::Template::kAlpaca:
    case config::Template::kRaw: t.system_ = ""; break;
    case config::Template::kQwen25: t.system_ = kQwen25System; break;
    case config::Template::kLlama3:
    case config::Template::kLlama31:
    case config::Template::kQwen3:
    case config::Template::kAuto:
      t.has_system_ = false;  // no system turn unless the conversation (or the config) has one
      break;
  }
  if (system_message) {
    t.system_ = *system_message;
    t.has_system_ = true;
  }
  return t;
}

namespace {

bool is_hf_family(config::Template k) {
  return k == config::Template::kLlama3 || k == config::Template::kLlama31 ||
         k == config::Template::kQwen25 || k == config::Template::kQwen3;
}

}  // namespace

std::vector<std::string> ChatTemplate::required_tokens() const {
  switch (kind_) {
    case config::Template::kLlama3:
    case config::Template::kLlama31:
      return {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
    case config::Template::kQwen25:
    case config::Template::kQwen3: return {"<|im_start|>", "<|im_end|>"};
    default: return {};
  }
}

void ChatTemplate::check_tokenizer(const Tokenizer& tok) const {
  std::string missing;
  for (const auto& t : required_tokens()) {
    const auto ids = tok.encode(t);
    const auto id = tok.piece_id(t);
    if (!(ids.size() == 1 && id && ids[0] == *id)) missing += (missing.empty() ? "" : ", ") + t;
  }
  if (missing.empty()) return;
  throw ConfigError(
      "template: " + name() + " writes its special tokens as text, and the tokenizer " + tok.path() +
      " does not hold " + missing +
      " as one token each (they would be tokenized as plain text): use "
      "the model's own tokenizer.json (the " +
      (kind_ == config::Template::kQwen25 || kind_ == config::Template::kQwen3 ? "Qwen" : "LLaMA 3") +
      " family's), or a template of this tokenizer's family");
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
    throw DataError(record_name(r) +
                    ": conversation has no assistant answer to train on (only its generation "
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

namespace {

// The conversation as a template walks it: `pairs` answered user turns, `n` user turns in all
// (pairs, and the unanswered one of a generation prompt).
struct Turns {
  const Record& r;
  std::size_t pairs, n;
  std::string user(std::size_t i) const { return user_content(r, 2 * i); }
  std::string answer(std::size_t i) const { return r.turns[2 * i + 1].content; }
  bool generation() const { return n > pairs; }
};

void vicuna_v11(SegmentList& s, const Turns& t, const std::string& system) {
  // ADD_COLON_TWO, sep=" ", sep2="</s>":
  //   ret = system + sep; per message: role + ": " + message + seps[i % 2], or role + ":" if empty
  s.masked(system + " ");
  for (std::size_t i = 0; i < t.n; ++i) {
    s.masked(t.user(i).empty() ? "USER:" : "USER: " + t.user(i) + " ");
    if (i < t.pairs && !t.answer(i).empty()) {
      s.masked("ASSISTANT:");
      s.trained(" " + t.answer(i));
      s.eos();
    } else {
      s.masked("ASSISTANT:");
    }
  }
}

void llama2(SegmentList& s, const Turns& t, const std::string& system) {
  // LLAMA2, system_template "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n", sep=" ", sep2=" </s><s>":
  //   ret = system_prompt if system else "[INST] "; message 0: message + " ";
  //   later: tag + " " + message + seps[i % 2]; empty message: tag
  s.masked(system.empty() ? "[INST] " : "[INST] <<SYS>>\n" + system + "\n<</SYS>>\n\n");
  for (std::size_t i = 0; i < t.n; ++i) {
    if (i == 0)
      s.masked(t.user(i).empty() ? "[INST]" : t.user(i) + " ");
    else
      s.masked(t.user(i).empty() ? "[INST]" : "[INST] " + t.user(i) + " ");
    s.masked("[/INST]");
    if (i < t.pairs && !t.answer(i).empty()) {
      s.trained(" " + t.answer(i) + " ");
      s.eos();
      s.bos();
    }
  }
}

void chatml(SegmentList& s, const Turns& t, const std::string& system) {
  // CHATML, system_template "<|im_start|>system\n{system}", sep="<|im_end|>":
  //   ret = system_prompt + sep + "\n"; per message: role + "\n" + message + sep + "\n",
  //   or role + "\n" if empty
  s.masked("<|im_start|>system\n" + system + "<|im_end|>\n");
  for (std::size_t i = 0; i < t.n; ++i) {
    s.masked(t.user(i).empty() ? "<|im_start|>user\n" : "<|im_start|>user\n" + t.user(i) + "<|im_end|>\n");
    s.masked("<|im_start|>assistant\n");
    if (i < t.pairs && !t.answer(i).empty()) {
      s.trained(t.answer(i) + "<|im_end|>");
      s.masked("\n");
    }
  }
}

// `own_system`: the record or the configuration gave a system message (else the preamble is
// Alpaca's own).
void alpaca(SegmentList& s, const Turns& t, const std::string& system, bool own_system) {
  // Stanford Alpaca: PROMPT_DICT preamble + "\n\n### Instruction:\n{instruction}\n\n"
  // ["### Input:\n{input}\n\n"] "### Response:\n", then output + eos. Later turns repeat
  // the instruction/response blocks.
  const bool has_input = !t.r.input.empty();
  std::string preamble = own_system ? system : (has_input ? kAlpacaInput : kAlpacaNoInput);
  for (std::size_t i = 0; i < t.n; ++i) {
    const std::string& ins = t.r.turns[2 * i].content;
    if (i == 0) {
      s.masked(preamble + "\n\n### Instruction:\n" + ins + "\n\n");
      if (has_input) s.masked("### Input:\n" + t.r.input + "\n\n");
      s.masked("### Response:\n");
    } else {
      s.masked("\n\n### Instruction:\n" + ins + "\n\n### Response:\n");
    }
    if (i < t.pairs) {
      s.trained(t.answer(i));
      s.eos();
    }
  }
}

void raw(SegmentList& s, const Turns& t) {
  for (std::size_t i = 0; i < t.n; ++i) {
    s.masked(t.user(i) + "\n");
    if (i < t.pairs) {
      s.trained(t.answer(i));
      s.eos();
    }
  }
}

}  // namespace

// Renders `pairs` complete (user, assistant) pairs, then, when `generation`, the next user
// turn and the assistant's opening tag (FastChat: append_message(roles[1], None)).
std::vector<Segment> ChatTemplate::build(const Record& r, std::size_t pairs, bool generation) const {
  if (is_hf_family(kind_)) return build_hf(r, pairs, generation);
  SegmentList s;
  const std::string& system = r.has_system ? r.system : system_;
  const Turns t{r, pairs, pairs + (generation ? 1 : 0)};
  s.bos();
  if (kind_ == config::Template::kVicunaV11)
    vicuna_v11(s, t, system);
  else if (kind_ == config::Template::kLlama2)
    llama2(s, t, system);
  else if (kind_ == config::Template::kChatml)
    chatml(s, t, system);
  else if (kind_ == config::Template::kAlpaca)
    alpaca(s, t, system, r.has_system || !system_.empty());
  else
    raw(s, t);
  return s.take();
}

namespace {

// Python's str.strip() (Jinja's trim filter): the code points str.isspace() holds.
bool py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// The code point starting at s[i] and its length; an invalid byte stands for itself (never space).
std::pair<char32_t, std::size_t> code_point(std::string_view s, std::size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  const std::size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
  if (n == 0 || i + n > s.size()) return {0xFFFFFFFF, 1};
  char32_t c = n == 1 ? b : b & (0x7F >> n);
  for (std::size_t k = 1; k < n; ++k) {
    const auto x = static_cast<unsigned char>(s[i + k]);
    if ((x >> 6) != 2) return {0xFFFFFFFF, 1};
    c = (c << 6) | (x & 0x3F);
  }
  return {c, n};
}

std::string py_trim(std::string_view s) {
  std::size_t b = 0;
  while (b < s.size()) {
    auto [c, n] = code_point(s, b);
    if (!py_space(c)) break;
    b += n;
  }
  std::size_t e = b, i = b;  // e: the end of the last non-space code point
  while (i < s.size()) {
    auto [c, n] = code_point(s, i);
    i += n;
    if (!py_space(c)) e = i;
  }
  return std::string(s.substr(b, e - b));
}

// str.strip/lstrip/rstrip('\n').
std::string_view lstrip_nl(std::string_view s) {
  return s.substr(std::min(s.find_first_not_of('\n'), s.size()));
}
std::string_view rstrip_nl(std::string_view s) {
  const auto e = s.find_last_not_of('\n');
  return e == std::string_view::npos ? std::string_view() : s.substr(0, e + 1);
}
std::string_view strip_nl(std::string_view s) { return rstrip_nl(lstrip_nl(s)); }

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// The official templates of the LLaMA 3 and Qwen families, statement for statement (their
// tool branches aside); `system`: the system message, if any. With t.generation() the turns end
// with add_generation_prompt's text.
void llama3(SegmentList& s, const Turns& t, const std::optional<std::string>& system, bool llama31) {
  // 3.0: bos_token + each message as '<|start_header_id|>' + role + '<|end_header_id|>\n\n'
  // + content | trim + '<|eot_id|>'. 3.1: bos_token, then a system turn always: the
  // knowledge-date lines + (the system message | trim, else "") + '<|eot_id|>'.
  s.masked("<|begin_of_text|>");
  if (llama31)
    s.masked(std::string("<|start_header_id|>system<|end_header_id|>\n\n") + kLlama31SystemHead +
             py_trim(system.value_or("")) + "<|eot_id|>");
  else if (system)
    s.masked("<|start_header_id|>system<|end_header_id|>\n\n" + py_trim(*system) + "<|eot_id|>");
  for (std::size_t i = 0; i < t.n; ++i) {
    s.masked("<|start_header_id|>user<|end_header_id|>\n\n" + py_trim(t.user(i)) + "<|eot_id|>");
    if (i < t.pairs) {
      s.masked("<|start_header_id|>assistant<|end_header_id|>\n\n");
      s.trained(py_trim(t.answer(i)) + "<|eot_id|>");
    }
  }
  if (t.generation()) s.masked("<|start_header_id|>assistant<|end_header_id|>\n\n");
}

void qwen25(SegmentList& s, const Turns& t, const std::optional<std::string>& system) {
  // '<|im_start|>system\n' + (messages[0] if system, else the default) + '<|im_end|>\n',
  // then '<|im_start|>' + role + '\n' + content + '<|im_end|>\n' per message.
  s.masked("<|im_start|>system\n" + system.value_or(kQwen25System) + "<|im_end|>\n");
  for (std::size_t i = 0; i < t.n; ++i) {
    s.masked("<|im_start|>user\n" + t.user(i) + "<|im_end|>\n");
    if (i < t.pairs) {
      s.masked("<|im_start|>assistant\n");
      s.trained(t.answer(i) + "<|im_end|>");
      s.masked("\n");
    }
  }
  if (t.generation()) s.masked("<|im_start|>assistant\n");
}

void qwen3(SegmentList& s, const Turns& t, const std::optional<std::string>& system) {
  // The messages' indices as the template counts them (the system message is index 0).
  const std::size_t base = system ? 1 : 0, count = base + 2 * t.pairs + (t.generation() ? 1 : 0);
  auto content_at = [&](std::size_t idx) {
    return (idx - base) % 2 == 0 ? t.user((idx - base) / 2) : t.answer((idx - base) / 2);
  };
  // ns.last_query_index: the last user message that is not a '<tool_response>' wrapper.
  std::size_t last_query = count - 1;
  for (std::size_t idx = count; idx-- > base;) {
    if ((idx - base) % 2 != 0) continue;
    const std::string c = content_at(idx);
    if (!(starts_with(c, "<tool_response>") && ends_with(c, "</tool_response>"))) {
      last_query = idx;
      break;
    }
  }
  if (system) s.masked("<|im_start|>system\n" + *system + "<|im_end|>\n");
  for (std::size_t idx = base; idx < count; ++idx) {
    const std::string c = content_at(idx);
    if ((idx - base) % 2 == 0) {
      s.masked("<|im_start|>user\n" + c + "<|im_end|>\n");
      continue;
    }
    // Reasoning written in the answer ("<think>...</think>rest") is split off it.
    std::string content = c, reasoning;
    if (const auto close = c.find("</think>"); close != std::string::npos) {
      content = std::string(lstrip_nl(std::string_view(c).substr(c.rfind("</think>") + 8)));
      const std::string_view before = rstrip_nl(std::string_view(c).substr(0, close));
      const auto open = before.rfind("<think>");
      reasoning = std::string(lstrip_nl(open == std::string_view::npos ? before : before.substr(open + 7)));
    }
    s.masked("<|im_start|>assistant\n");
    if (idx > last_query && (idx == count - 1 || !reasoning.empty())) {
      const std::string think = "<think>\n" + std::string(strip_nl(reasoning)) + "\n</think>\n\n";
      // An empty think block is the prompt (enable_thinking=False's); real thinking is trained.
      if (reasoning.empty())
        s.masked(think);
      else
        s.trained(think);
      s.trained(std::string(lstrip_nl(content)) + "<|im_end|>");
    } else {
      s.trained(content + "<|im_end|>");
    }
    s.masked("\n");
  }
  if (t.generation()) s.masked("<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

}  // namespace

// The messages are the system message (the record's, else the configured or default one, if
// any), then `pairs` user/assistant pairs and, when `generation`, the next user turn and
// add_generation_prompt's text.
std::vector<Segment> ChatTemplate::build_hf(const Record& r, std::size_t pairs, bool generation) const {
  SegmentList s;
  std::optional<std::string> system;
  if (r.has_system)
    system = r.system;
  else if (has_system_)
    system = system_;
  const Turns t{r, pairs, pairs + (generation ? 1 : 0)};
  if (kind_ == config::Template::kLlama3 || kind_ == config::Template::kLlama31)
    llama3(s, t, system, kind_ == config::Template::kLlama31);
  else if (kind_ == config::Template::kQwen25)
    qwen25(s, t, system);
  else
    qwen3(s, t, system);
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

namespace {

void append(Encoded& e, const std::vector<std::int32_t>& ids, bool trained) {
  e.ids.insert(e.ids.end(), ids.begin(), ids.end());
  e.trained.insert(e.trained.end(), ids.size(), trained ? 1 : 0);
}

// Consecutive text segments of a tokenizer.json tokenizer, encoded as one text: a token is
// trained when any of its bytes lies in a trained segment. Where the tokens' bytes do not
// spell the text (a normalizer changed it), each segment is encoded alone.
void encode_run(const std::vector<const Segment*>& run, const Tokenizer& tok, Encoded& e) {
  if (run.empty()) return;
  std::string text;
  std::vector<std::size_t> ends;
  for (const Segment* seg : run) ends.push_back((text += seg->text).size());
  const std::vector<std::int32_t> ids = tok.encode(text);
  std::vector<std::uint8_t> flags;  // Encoded::trained of `ids`
  std::size_t pos = 0, k = 0;
  for (std::int32_t id : ids) {
    const auto bytes = tok.token_bytes(id);
    if (!bytes || text.compare(pos, bytes->size(), *bytes) != 0) break;
    const std::size_t end = pos + bytes->size();
    while (k < run.size() && ends[k] <= pos) ++k;  // the first segment ending after pos
    bool trained = false;
    for (std::size_t j = k; j < run.size() && (j == k || ends[j - 1] < end); ++j) trained |= run[j]->trained;
    flags.push_back(trained ? 1 : 0);
    pos = end;
  }
  if (flags.size() == ids.size() && pos == text.size()) {
    e.ids.insert(e.ids.end(), ids.begin(), ids.end());
    e.trained.insert(e.trained.end(), flags.begin(), flags.end());
    return;
  }
  for (const Segment* seg : run) append(e, tok.encode(seg->text), seg->trained);
}

}  // namespace

Encoded ChatTemplate::encode(const std::vector<Segment>& segs, const Tokenizer& tok) {
  Encoded e;
  const bool whole = tok.kind() == Tokenizer::Kind::kHfJson;
  std::vector<const Segment*> run;  // pending text segments (tokenizer.json only)
  bool after_text = false;
  for (const auto& seg : segs) {
    if (seg.kind == SegmentKind::kText) {
      if (whole)
        run.push_back(&seg);
      else
        append(e, after_text ? tok.encode_continuation(seg.text) : tok.encode(seg.text), seg.trained);
      after_text = true;
      continue;
    }
    encode_run(run, tok, e);
    run.clear();
    const std::int32_t id = seg.kind == SegmentKind::kBos ? tok.bos_id() : tok.eos_id();
    if (id >= 0) append(e, {id}, seg.trained);
    after_text = false;
  }
  encode_run(run, tok, e);
  return e;
}

std::vector<std::string> ChatTemplate::stop_strings() const {
  switch (kind_) {
    case config::Template::kChatml: return {"<|im_end|>"};
    case config::Template::kLlama3:
    case config::Template::kLlama31: return {"<|eot_id|>", "<|end_of_text|>"};
    case config::Template::kQwen25:
    case config::Template::kQwen3: return {"<|im_end|>", "<|endoftext|>"};
    case config::Template::kAuto: break;
    case config::Template::kVicunaV11: return {"</s>", "USER:"};
    case config::Template::kLlama2: return {"</s>", "[INST]"};
    case config::Template::kAlpaca: return {"</s>", "### Instruction:"};
    case config::Template::kRaw: break;
  }
  return {"</s>"};
}

}  // namespace sft::data
