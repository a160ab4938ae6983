// Dataset readers, one per format. They validate each record and report bad ones with
// file:line and the reason; on_bad_record decides whether the first one is fatal.
//
//   gsm8k     jsonl {question, answer}; answer ends with "#### <number>"
//   alpaca    json array or jsonl {instruction, input?, output}
//   sharegpt  json array (or jsonl) {id?, conversations: [{from, value}]}, from in
//             human|user / gpt|assistant / system (first only); turns must alternate
//   messages  json array or jsonl {messages: [{role, content}]}; optional record filter
//   text      jsonl {<text_field>: str}, or a .txt file of blank-line separated documents
//   mtbench   FastChat question.jsonl {question_id, category, turns, reference?}
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sft/config/run_config.h"
#include "sft/data/record.h"

namespace sft::data {

struct BadRecord {
  std::string where;   // file:line
  std::string reason;  // ends with "(array element N, from 0)" in a JSON array file
};

struct ReadResult {
  std::vector<Record> records;           // the good records that passed the filter, in file order
  std::int64_t read = 0;                 // records seen in the file
  std::int64_t filtered = 0;             // dropped by the dataset's filter (not bad)
  std::int64_t trailing_user_turns = 0;  // unanswered last user turns removed (not when kept)
  std::vector<BadRecord> bad;
};

// Throws DataError for a missing/empty/unparsable file, and for the first bad record
// when on_bad_record is kError. A chat record's unanswered last user turn is dropped and
// counted (a conversation left without an answer is bad), unless `keep_unanswered`: then
// the record ends with that turn, for rendering the prompt that answers it. A record above
// `max_record_bytes` (data.max_record_bytes) is bad without being parsed. A bad record is
// named by file:line, and in a JSON array file also by its element index (in the reason).
ReadResult read_dataset(const config::DatasetSpec& spec, config::OnBadRecord on_bad_record,
                        bool keep_unanswered = false,
                        std::int64_t max_record_bytes = config::DataSpec{}.max_record_bytes);

// GSM8K helpers shared with the evaluator.
std::string strip_calculator_annotations(const std::string& answer);

}  // namespace sft::data
