#include "sft/data/readers.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <functional>
#include <optional>

#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft::data {
namespace {

using nlohmann::json;

// A record-level problem: becomes a BadRecord (or the run's error).
struct BadInput {
  std::string reason;
};

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

const json& field(const json& obj, const char* name, const char* expected) {
  auto it = obj.find(name);
  if (it == obj.end()) throw BadInput{std::string("missing field \"") + name + "\"; expected " + expected};
  return *it;
}

std::string string_field(const json& obj, const char* name, const char* expected, bool required = true) {
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
    if (c < 0x80) extra = 0;
    else if ((c >> 5) == 0x6) extra = 1;
    else if ((c >> 4) == 0xe) extra = 2;
    else if ((c >> 3) == 0x1e) extra = 3;
    else return false;
    if (i + extra >= s.size() && extra > 0) return false;
    for (std::size_t k = 1; k <= extra; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    i += extra + 1;
  }
  return true;
}

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

using RecordParser = std::function<void(const json&, Record&, ReadResult&)>;

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
  std::string (*role_of)(const std::string&);
};

void parse_chat(const json& j, Record& r, ReadResult& res, bool keep_unanswered, const ChatLayout& l) {
  const std::string fields = std::string("\"") + l.role + "\" and \"" + l.text + "\"";
  const json& turns = field(j, l.list, (std::string("\"") + l.list + "\": [{\"" + l.role + "\", \"" + l.text + "\"}, ...]").c_str());
  if (!turns.is_array()) throw BadInput{std::string("\"") + l.list + "\" must be a list, got " + type_name(turns)};
  std::vector<RawTurn> raw;
  for (std::size_t i = 0; i < turns.size(); ++i) {
    const json& t = turns[i];
    const std::string which = std::string(l.turn) + " " + std::to_string(i);
    if (!t.is_object()) throw BadInput{which + ": expected an object {" + l.role + ", " + l.text + "}"};
    const std::string name = string_field(t, l.role, fields.c_str());
    const std::string text = string_field(t, l.text, fields.c_str());
    const std::string role = l.role_of(name);
    if (role.empty()) throw BadInput{which + ": " + l.unknown + "\"" + name + "\" (expected " + l.expected + ")"};
    raw.push_back({role, text});
  }
  build_chat(r, raw, res, keep_unanswered);
}

const ChatLayout kShareGpt{"conversations", "from", "value", "turn", "unknown \"from\": ", "human, gpt or system",
                           [](const std::string& from) -> std::string {
                             if (from == "human" || from == "user") return "user";
                             if (from == "gpt" || from == "assistant" || from == "chatgpt" || from == "bard") return "assistant";
                             return from == "system" ? "system" : "";
                           }};
const ChatLayout kMessages{"messages", "role", "content", "message", "unknown role ", "system, user or assistant",
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
    if (ref && ref->is_array() && i < ref->size() && (*ref)[i].is_string()) answer = (*ref)[i].get<std::string>();
    r.turns.push_back({Role::kAssistant, answer});
  }
}

struct Chunk {
  std::size_t begin, end;
  std::int64_t line;
};

// Splits a JSON array document into its top-level elements without parsing them, so each
// element can be parsed (and reported) on its own with its starting line.
std::vector<Chunk> split_json_array(const std::string& text, std::size_t start, const std::string& file) {
  std::vector<Chunk> out;
  std::int64_t line = 1;
  for (std::size_t i = 0; i < start; ++i)
    if (text[i] == '\n') ++line;
  std::size_t i = start + 1;  // past '['
  int depth = 0;
  bool in_string = false;
  std::size_t elem_begin = std::string::npos;
  std::int64_t elem_line = 0;
  bool expect_value = true;
  for (; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\n') ++line;
    if (in_string) {
      if (c == '\\') {
        ++i;
        if (i < text.size() && text[i] == '\n') ++line;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    if (depth == 0) {
      if (c == ']') {
        if (elem_begin != std::string::npos) out.push_back({elem_begin, i, elem_line});
        else if (!expect_value || !out.empty())
          throw DataError(file + ":" + std::to_string(line) + ": malformed JSON: trailing comma before ']'");
        for (std::size_t k = i + 1; k < text.size(); ++k)
          if (!std::isspace(static_cast<unsigned char>(text[k])))
            throw DataError(file + ":" + std::to_string(line) + ": malformed JSON: unexpected text after the closing ']'");
        return out;
      }
      if (c == ',') {
        if (elem_begin == std::string::npos)
          throw DataError(file + ":" + std::to_string(line) + ": malformed JSON: unexpected ','");
        out.push_back({elem_begin, i, elem_line});
        elem_begin = std::string::npos;
        expect_value = true;
        continue;
      }
      if (elem_begin == std::string::npos) {
        if (!expect_value)
          throw DataError(file + ":" + std::to_string(line) + ": malformed JSON: missing ',' between elements");
        elem_begin = i;
        elem_line = line;
        expect_value = false;
      }
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') ++depth;
    else if (c == '}' || c == ']') {
      if (--depth < 0) throw DataError(file + ":" + std::to_string(line) + ": malformed JSON: unbalanced '" + c + "'");
    }
  }
  throw DataError(file + ":" + std::to_string(line) + ": malformed JSON: the file ends inside the top-level array (truncated?)");
}

std::string parse_error_text(const json::parse_error& e) {
  std::string w = e.what();
  // "[json.exception.parse_error.101] parse error at line 1, column 5: syntax error ..." -> the tail
  auto pos = w.find(": ", w.find("parse error"));
  return pos == std::string::npos ? w : w.substr(pos + 2);
}

}  // namespace

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

ReadResult read_dataset(const config::DatasetSpec& spec, config::OnBadRecord on_bad_record, bool keep_unanswered,
                        std::int64_t max_record_bytes) {
  const std::string& file = spec.path;
  if (!fs::exists(file)) throw DataError(file + ": dataset file not found (datasets." + spec.name + ".path)");
  std::string text = fs::read_file(file);
  std::size_t start = 0;
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) start = 3;  // UTF-8 byte-order mark
  while (start < text.size() && std::isspace(static_cast<unsigned char>(text[start]))) ++start;
  if (start >= text.size()) throw DataError(file + ": empty file (datasets." + spec.name + ")");

  ReadResult res;
  const bool skip = on_bad_record == config::OnBadRecord::kSkip;
  // In a JSON array the line alone may not say which record (a one-line array): the reason
  // names the element too.
  std::int64_t element = -1;
  auto bad = [&](std::int64_t line, std::string reason) {
    const std::string where = file + ":" + std::to_string(line);
    if (element >= 0) reason += " (array element " + std::to_string(element) + ", from 0)";
    if (!skip)
      throw DataError(where + ": " + reason + " (data.on_bad_record: skip counts and skips bad records)");
    res.bad.push_back({where, reason});
  };

  auto handle = [&](const json& j, std::int64_t line, std::int64_t index) {
    Record r;
    r.origin = {file, line, index, ""};
    try {
      if (!j.is_object()) throw BadInput{std::string("expected a JSON object, got a ") + type_name(j)};
      if (!spec.filter_field.empty()) {
        auto it = j.find(spec.filter_field);
        if (it == j.end() || *it != spec.filter_equals) {
          ++res.filtered;
          return;
        }
      }
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
      r.origin.id = id_of(j, spec.format == config::Format::kMtbench ? "question_id" : "id");
      if (r.origin.id.empty()) r.origin.id = spec.name + ":" + std::to_string(index);
      res.records.push_back(std::move(r));
    } catch (const BadInput& b) {
      bad(line, b.reason);
    }
  };

  // A record larger than this is refused before it is parsed: a 50 MB line would take
  // gigabytes as a JSON tree. Real records are kilobytes.
  const auto max_bytes = static_cast<std::size_t>(std::max<std::int64_t>(1, max_record_bytes));
  auto too_large = [&](std::size_t bytes) {
    return "a record of " + std::to_string(bytes) + " bytes, above data.max_record_bytes (" +
           std::to_string(max_bytes) + "): a corrupt or non-dataset file? (raise data.max_record_bytes if it is real)";
  };
  auto parse = [&](std::size_t b, std::size_t e) {
    if (e - b > max_bytes) throw BadInput{too_large(e - b)};
    try {
      return json::parse(text.begin() + static_cast<std::ptrdiff_t>(b), text.begin() + static_cast<std::ptrdiff_t>(e));
    } catch (const std::bad_alloc&) {
      throw BadInput{"out of memory parsing a record of " + std::to_string(e - b) + " bytes (lower data.max_record_bytes)"};
    }
  };

  // Plain-text corpora: one document per blank-line separated paragraph.
  if (spec.format == config::Format::kText && file.size() > 4 && file.compare(file.size() - 4, 4, ".txt") == 0) {
    std::int64_t line = 1, doc_line = 0, index = 0;
    std::string doc;
    std::size_t i = 0;
    auto flush = [&]() {
      if (doc.empty()) return;
      ++res.read;
      Record r;
      r.origin = {file, doc_line, index, spec.name + ":" + std::to_string(index)};
      ++index;
      if (doc.size() > max_bytes) {
        bad(doc_line, too_large(doc.size()));
      } else if (!valid_utf8(doc)) {
        bad(doc_line, "invalid UTF-8");
      } else {
        r.is_text = true;
        r.text = doc;
        res.records.push_back(std::move(r));
      }
      doc.clear();
    };
    while (i < text.size()) {
      std::size_t nl = text.find('\n', i);
      if (nl == std::string::npos) nl = text.size();
      std::string_view l(text.data() + i, nl - i);
      if (!l.empty() && l.back() == '\r') l.remove_suffix(1);  // CRLF files train on the same text as LF ones
      bool blank = l.find_first_not_of(" \t\r") == std::string_view::npos;
      if (blank) flush();
      else {
        if (doc.empty()) doc_line = line;
        else doc.push_back('\n');
        doc.append(l);
      }
      i = nl + 1;
      ++line;
    }
    flush();
    return res;
  }

  if (text[start] == '[') {
    std::vector<Chunk> chunks = split_json_array(text, start, file);
    if (chunks.empty()) throw DataError(file + ": the JSON array is empty (datasets." + spec.name + ")");
    std::int64_t index = 0;
    for (const auto& c : chunks) {
      ++res.read;
      element = index;
      json j;
      try {
        j = parse(c.begin, c.end);
      } catch (const json::parse_error& e) {
        std::int64_t line = c.line;
        std::size_t upto = std::min(c.begin + (e.byte > 0 ? e.byte - 1 : 0), c.end);
        for (std::size_t k = c.begin; k < upto; ++k)
          if (text[k] == '\n') ++line;
        bad(line, "malformed JSON: " + parse_error_text(e));
        ++index;
        continue;
      } catch (const BadInput& b) {
        bad(c.line, b.reason);
        ++index;
        continue;
      }
      handle(j, c.line, index++);
    }
    return res;
  }

  if (text[start] != '{')
    throw DataError(file + ":1: malformed JSON: expected a JSON array '[...]' or one JSON object per line (jsonl)");

  // JSON Lines.
  std::int64_t line = 1, index = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t nl = text.find('\n', i);
    if (nl == std::string::npos) nl = text.size();
    std::size_t b = i, e = nl;
    while (b < e && std::isspace(static_cast<unsigned char>(text[b]))) ++b;
    while (e > b && std::isspace(static_cast<unsigned char>(text[e - 1]))) --e;
    if (b < e) {
      ++res.read;
      json j;
      bool ok = true;
      try {
        j = parse(b, e);
      } catch (const BadInput& bi) {
        ok = false;
        bad(line, bi.reason);
      } catch (const json::parse_error& err) {
        ok = false;
        std::string why = parse_error_text(err);
        if (line == 1 && text[b] == '{' && why.find("end of input") != std::string::npos)
          why += " (is this a pretty-printed JSON object? expected one object per line or a JSON array)";
        bad(line, "malformed JSON: " + why);
      }
      if (ok) handle(j, line, index);
      ++index;
    }
    i = nl + 1;
    ++line;
  }
  return res;
}

}  // namespace sft::data
