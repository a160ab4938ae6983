// MT-Bench answers in FastChat's model_answer format (fastchat/llm_judge/gen_model_answer.py),
// so that FastChat's judge (gen_judgment.py) reads them unchanged. No judge runs here.
//
// Questions: FastChat's question.jsonl {question_id, category, turns: [str, ...], reference?}.
// Answer file: one JSON object per line, sorted by question_id:
//   {"question_id": int, "answer_id": 22-char shortuuid, "model_id": str,
//    "choices": [{"index": 0, "turns": [answer_1, answer_2]}], "tstamp": unix time (float)}
// Generation follows gen_model_answer.py: turn t's prompt holds the model's own (stripped)
// answers to the earlier turns; sampling temperature per category from FastChat's
// temperature_config (0 = greedy), top-k 50 (transformers' default when sampling).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sft/util/rng.h"

namespace sft::eval {

struct MtBenchQuestion {
  std::int64_t question_id = 0;
  std::string category;
  std::vector<std::string> turns;
};

// The first `limit` questions (limit <= 0: all). Throws DataError naming file:line.
std::vector<MtBenchQuestion> load_mtbench_questions(const std::string& path, std::int64_t limit = 0);

// FastChat's temperature_config: writing/roleplay 0.7, extraction/math/coding/reasoning 0.0,
// stem/humanities 0.1; other categories 0.7 (FastChat's fallback).
double mtbench_temperature(const std::string& category);

// 22 characters from shortuuid's alphabet (57 symbols, ~128 bits), from `rng`.
std::string short_uuid(Rng& rng);

nlohmann::ordered_json mtbench_answer(const MtBenchQuestion& q, const std::string& answer_id,
                                      const std::string& model_id, const std::vector<std::string>& answers,
                                      double tstamp);

// What is wrong with one line of an answer file ("" when it is valid for `q`): the checks
// FastChat's load_model_answers and judge rely on.
std::string check_mtbench_answer(const nlohmann::json& line, const MtBenchQuestion& q);

}  // namespace sft::eval
