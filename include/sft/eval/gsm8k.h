// GSM8K scoring as the community does it.
//
// Reference answer: the number after the last "####". Model answer: the number after its
// own "####" when it wrote one, else the last number in the text. Numbers are read with
// thousands separators, currency signs and units stripped ("$1,234.50" -> 1234.5,
// "18 dollars." -> 18, "-3" -> -3, ".5" -> 0.5). Answers match when numerically equal
// (relative tolerance 1e-6). The same scorer serves the synthetic `math` skill.
//
// Predictions file (scoring outputs of another system): JSON lines, one object per line,
//   {"prediction": "<full model output>", "idx": <0-based reference index>?, "question": "..."?}
// Lines are matched to references by "idx" when every line has one, else by order (line i
// answers reference i). A "question", when present, must equal the reference's (after
// trimming whitespace): a misaligned file is an error, not a silently low score. Every
// reference in the scored range (the first `limit`, or all) needs exactly one prediction; a
// line past the reference file's end (extra lines, an idx out of range) is an error.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sft::eval {

std::optional<double> gsm8k_reference_answer(const std::string& answer);
std::optional<double> gsm8k_predicted_answer(const std::string& text);
bool gsm8k_match(std::optional<double> predicted, std::optional<double> reference);

struct Gsm8kItem {
  std::string question, answer;  // answer: the reference solution ending in "#### N"
};

// GSM8K jsonl {question, answer}; the first `limit` items (limit <= 0: all). Throws DataError.
std::vector<Gsm8kItem> load_gsm8k(const std::string& path, std::int64_t limit = 0);

// One prediction per item, aligned as described above. Throws DataError.
// `items` may be a prefix of the reference file, which has `references_in_file` records
// (-1: items is the whole file).
std::vector<std::string> load_gsm8k_predictions(const std::string& path, const std::vector<Gsm8kItem>& items,
                                                std::int64_t references_in_file = -1);

// {"summary": {metric, score, accuracy, correct, n, no_answer}, "samples": [{idx, question,
// reference, prediction, extracted, correct}]}; extracted is null when no number was found.
// REQUIRES: predictions.size() == items.size().
nlohmann::ordered_json score_gsm8k(const std::vector<Gsm8kItem>& items,
                                   const std::vector<std::string>& predictions);

}  // namespace sft::eval
