// The record formats: GSM8K, Alpaca, ShareGPT and messages chats, MT-Bench questions and
// text, each checked field by field (record_formats.h).
#include "data/record_formats.h"

#include <algorithm>
#include <cctype>
#include <functional>

namespace sft::data {

using nlohmann::json;

const char* type_name(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "boolean";
    case json::value_t::string: return "string";
    case json::value_t::array: return "list";
    case json::value_t::object: return "object";
    case json::value_t::discarded: return "nothing";
    default: return "number";
  }
}

namespace {

const json& field(const json& obj, const char* name, const char* expected) {
  auto it = obj.find(name);
  if (it == obj.end()) throw BadInput{std::string("missing field \"") + name + "\"; expected " + expected};
  return *it;
}

}  // namespace

std::string string_field(const json& obj, const char* name, const char* expected, bool required) {
  auto it = obj.find(name);
  if (it == obj.end() || (it->is_null() && !required)) {
    if (required) throw BadInput{std::string("missing field \"") + name + "\"; expected " + expected};
    return "";
  }
  if (!it->is_string())
    throw BadInput{std::string("field \"") + name + "\" must be a string, got " + type_name(*it)};
  return it->get<std::string>();
}

std::string id_of(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_integer()) return std::to_string(it->get<long long>());
  return it->dump();
}

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    std::size_t extra;
    if (c < 0x80)
      extra = 0;
    else if ((c >> 5) == 0x6)
      extra = 1;
    else if ((c >> 4) == 0xe)
      extra = 2;
    else if ((c >> 3) == 0x1e)
      extra = 3;
    else
      return false;
    if (i + extra >= s.size() && extra > 0) return false;
    for (std::size_t k = 1; k <= extra; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    i += extra + 1;
  }
  return true;
}

namespace {

// Turns of a chat record in a common shape; `from` already mapped to user/assistant/system.
struct RawTurn {
  std::string role;
  std::string content;
};

void build_chat(Record& r, const std::vector<RawTurn>& raw, ReadResult& res, bool keep_unanswered) {
  if (raw.empty()) throw BadInput{"empty conversation"};
  std::size_t i = 0;
  if (raw[0].role == "system") {
    r.has_system = true;
    r.system = raw[0].content;
    i = 1;
  }
  if (i >= raw.size()) throw BadInput{"conversation has only a system message"};
  for (std::size_t k = i; k < raw.size(); ++k) {
    const std::string& role = raw[k].role;
    std::size_t pos = k - i;
    if (role == "system")
      throw BadInput{"turn " + std::to_string(k) + ": a system message is only allowed first"};
    const char* expected = pos % 2 == 0 ? "user" : "assistant";
    if (role != expected)
      throw BadInput{"turn " + std::to_string(k) + ": expected a " + expected + " turn, got " + role +
                     " (turns must alternate user/assistant, starting with the user)"};
    r.turns.push_back({pos % 2 == 0 ? Role::kUser : Role::kAssistant, raw[k].content});
  }
  if (r.turns.back().role == Role::kUser && !keep_unanswered) {
    // An unanswered last question trains nothing; drop it, count it.
    r.turns.pop_back();
    ++res.trailing_user_turns;
    if (r.turns.empty()) throw BadInput{"conversation has no assistant answer"};
  }
}

void parse_gsm8k(const json& j, Record& r, bool strip) {
  std::string q = string_field(j, "question", "\"question\" and \"answer\"");
  std::string a = string_field(j, "answer", "\"question\" and \"answer\"");
  if (q.empty()) throw BadInput{"empty \"question\""};
  if (a.find("####") == std::string::npos) throw BadInput{"\"answer\" has no final \"#### <number>\" line"};
  if (strip) a = strip_calculator_annotations(a);
  r.turns = {{Role::kUser, q}, {Role::kAssistant, a}};
}

void parse_alpaca(const json& j, Record& r) {
  const char* expected = "\"instruction\", optional \"input\" and \"output\"";
  std::string ins = string_field(j, "instruction", expected);
  std::string input = string_field(j, "input", expected, /*required=*/false);
  std::string out = string_field(j, "output", expected);
  if (ins.empty()) throw BadInput{"empty \"instruction\""};
  r.input = input;
  r.turns = {{Role::kUser, ins}, {Role::kAssistant, out}};
}

// How a chat format lays out its turns: a list under `list`, each turn an object with a
// role under `role` and its text under `text`; `role_of` names the record's roles as
// user / assistant / system ("" for an unknown one).
struct ChatLayout {
  const char* list;      // "conversations"
  const char* role;      // "from"
  const char* text;      // "value"
  const char* turn;      // what the messages call a turn: "turn"
  const char* unknown;   // the start of the unknown-role message: "unknown \"from\": "
  const char* expected;  // the roles the message lists: "human, gpt or system"
  const char* shape;     // the record's expected shape: "\"conversations\": [{\"from\", \"value\"}, ...]"
  const char* fields;    // a turn's: "\"from\" and \"value\""
  std::string (*role_of)(const std::string&);
};

void parse_chat(const json& j, Record& r, ReadResult& res, bool keep_unanswered, const ChatLayout& l) {
  const json& turns = field(j, l.list, l.shape);
  if (!turns.is_array())
    throw BadInput{std::string("\"") + l.list + "\" must be a list, got " + type_name(turns)};
  std::vector<RawTurn> raw;
  for (std::size_t i = 0; i < turns.size(); ++i) {
    const json& t = turns[i];
    auto which = [&] { return std::string(l.turn) + " " + std::to_string(i); };
    if (!t.is_object()) throw BadInput{which() + ": expected an object {" + l.role + ", " + l.text + "}"};
    std::string name = string_field(t, l.role, l.fields);
    std::string text = string_field(t, l.text, l.fields);
    std::string role = l.role_of(name);
    if (role.empty())
      throw BadInput{which() + ": " + l.unknown + "\"" + name + "\" (expected " + l.expected + ")"};
    raw.push_back({std::move(role), std::move(text)});
  }
  build_chat(r, raw, res, keep_unanswered);
}

const ChatLayout kShareGpt{"conversations",
                           "from",
                           "value",
                           "turn",
                           "unknown \"from\": ",
                           "human, gpt or system",
                           "\"conversations\": [{\"from\", \"value\"}, ...]",
                           "\"from\" and \"value\"",
                           [](const std::string& from) -> std::string {
                             if (from == "human" || from == "user") return "user";
                             if (from == "gpt" || from == "assistant" || from == "chatgpt" || from == "bard")
                               return "assistant";
                             return from == "system" ? "system" : "";
                           }};
const ChatLayout kMessages{"messages",
                           "role",
                           "content",
                           "message",
                           "unknown role ",
                           "system, user or assistant",
                           "\"messages\": [{\"role\", \"content\"}, ...]",
                           "\"role\" and \"content\"",
                           [](const std::string& role) -> std::string {
                             return role == "user" || role == "assistant" || role == "system" ? role : "";
                           }};

void parse_mtbench(const json& j, Record& r) {
  const json& turns = field(j, "turns", "\"question_id\", \"category\" and \"turns\"");
  if (!turns.is_array() || turns.empty()) throw BadInput{"\"turns\" must be a non-empty list of strings"};
  const json* ref = j.contains("reference") ? &j["reference"] : nullptr;
  for (std::size_t i = 0; i < turns.size(); ++i) {
    if (!turns[i].is_string()) throw BadInput{"turns[" + std::to_string(i) + "] must be a string"};
    r.turns.push_back({Role::kUser, turns[i].get<std::string>()});
    // Reference answers (math, reasoning, coding questions) become the assistant turns;
    // questions without one yield samples with nothing to train (reported, not trained).
    std::string answer;
    if (ref && ref->is_array() && i < ref->size() && (*ref)[i].is_string())
      answer = (*ref)[i].get<std::string>();
    r.turns.push_back({Role::kAssistant, answer});
  }
}

}  // namespace

void parse_record(const config::DatasetSpec& spec, const json& j, Record& r, ReadResult& res,
                  bool keep_unanswered) {
  switch (spec.format) {
    case config::Format::kGsm8k: parse_gsm8k(j, r, spec.strip_calculator); break;
    case config::Format::kAlpaca: parse_alpaca(j, r); break;
    case config::Format::kSharegpt: parse_chat(j, r, res, keep_unanswered, kShareGpt); break;
    case config::Format::kMessages: parse_chat(j, r, res, keep_unanswered, kMessages); break;
    case config::Format::kMtbench: parse_mtbench(j, r); break;
    case config::Format::kText:
      r.is_text = true;
      r.text = string_field(j, spec.text_field.c_str(), ("\"" + spec.text_field + "\"").c_str());
      if (r.text.empty()) throw BadInput{"empty text"};
      break;
  }
}

std::string user_content(const Record& r, std::size_t turn) {
  const std::string& c = r.turns[turn].content;
  if (turn == 0 && !r.input.empty()) return c + "\n" + r.input;
  return c;
}

std::string strip_calculator_annotations(const std::string& answer) {
  std::string out;
  out.reserve(answer.size());
  std::size_t i = 0;
  while (i < answer.size()) {
    if (answer.compare(i, 2, "<<") == 0) {
      auto close = answer.find(">>", i + 2);
      if (close != std::string::npos) {
        i = close + 2;
        continue;
      }
    }
    out.push_back(answer[i++]);
  }
  return out;
}

}  // namespace sft::data
