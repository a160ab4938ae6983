// Record: one conversation (or raw document) read from a dataset file, before any
// template or tokenizer touches it. Every record keeps its Origin, which travels into
// the training sample, the data cache, `sft data inspect` and the run's manifest.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sft::data {

struct Origin {
  std::string file;
  std::int64_t line = 0;   // 1-based line where the record starts
  std::int64_t index = 0;  // 0-based position among the file's records (jsonl line or array element)
  std::string id;          // the record's own id field if any, else "<dataset>:<index>"
  std::string where() const { return file + ":" + std::to_string(line); }
};

enum class Role { kUser, kAssistant };

struct Message {
  Role role;
  std::string content;
};

struct Record {
  Origin origin;
  bool has_system = false;
  std::string system;          // per-record system message (ShareGPT/messages "system" turns)
  std::vector<Message> turns;  // user, assistant, user, ...; ends with an answer unless read
                               // with keep_unanswered (a prompt still to answer)
  std::string input;           // Alpaca "input", kept apart for the alpaca template
  bool is_text = false;        // raw text: trained on every token, no template
  std::string text;
};

// The user turn as chat templates show it: Alpaca's instruction and input joined by "\n".
std::string user_content(const Record& r, std::size_t turn);

}  // namespace sft::data
