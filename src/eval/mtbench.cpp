#include "sft/eval/mtbench.h"

#include <set>

#include "sft/eval/jsonl.h"
#include "sft/util/error.h"

namespace sft::eval {
namespace {

constexpr char kShortUuidAlphabet[] =
    "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";  // shortuuid's default
constexpr std::size_t kAlphabetSize = sizeof kShortUuidAlphabet - 1;

}  // namespace

std::vector<MtBenchQuestion> load_mtbench_questions(const std::string& path, std::int64_t limit) {
  std::vector<MtBenchQuestion> out;
  std::set<std::int64_t> seen;
  for_each_json_line(path, [&](const nlohmann::json& j, const std::string& where) {
    MtBenchQuestion q;
    if (!j.contains("question_id") || !j["question_id"].is_number_integer())
      throw DataError(
          where + ": missing integer \"question_id\"; expected FastChat's {question_id, category, turns}");
    q.question_id = j["question_id"].get<std::int64_t>();
    if (j.contains("category") && j["category"].is_string()) q.category = j["category"].get<std::string>();
    if (!j.contains("turns") || !j["turns"].is_array() || j["turns"].empty())
      throw DataError(where + ": \"turns\" must be a non-empty list of strings");
    for (const auto& t : j["turns"]) {
      if (!t.is_string()) throw DataError(where + ": \"turns\" must be a non-empty list of strings");
      q.turns.push_back(t.get<std::string>());
    }
    if (!seen.insert(q.question_id).second)
      throw DataError(where + ": question_id " + std::to_string(q.question_id) + " appears twice");
    if (limit <= 0 || static_cast<std::int64_t>(out.size()) < limit) out.push_back(std::move(q));
  });
  if (out.empty()) throw DataError(path + ": no questions");
  return out;
}

double mtbench_temperature(const std::string& category) {
  if (category == "extraction" || category == "math" || category == "coding" || category == "reasoning" ||
      category == "arena-hard-200")
    return 0.0;
  if (category == "stem" || category == "humanities") return 0.1;
  return 0.7;  // writing, roleplay, and FastChat's default for unknown categories
}

std::string short_uuid(Rng& rng) {
  std::string s;
  for (int i = 0; i < 22; ++i) s.push_back(kShortUuidAlphabet[rng.below(kAlphabetSize)]);
  return s;
}

nlohmann::ordered_json mtbench_answer(const MtBenchQuestion& q, const std::string& answer_id,
                                      const std::string& model_id, const std::vector<std::string>& answers,
                                      double tstamp) {
  return {{"question_id", q.question_id},
          {"answer_id", answer_id},
          {"model_id", model_id},
          {"choices", nlohmann::ordered_json::array({{{"index", 0}, {"turns", answers}}})},
          {"tstamp", tstamp}};
}

std::string check_mtbench_answer(const nlohmann::json& j, const MtBenchQuestion& q) {
  if (!j.is_object()) return "not a JSON object";
  if (!j.contains("question_id") || !j["question_id"].is_number_integer())
    return "\"question_id\" is not an integer";
  if (j["question_id"].get<std::int64_t>() != q.question_id)
    return "\"question_id\" does not match the question";
  if (!j.contains("answer_id") || !j["answer_id"].is_string()) return "\"answer_id\" is not a string";
  const std::string id = j["answer_id"].get<std::string>();
  if (id.size() != 22 || id.find_first_not_of(kShortUuidAlphabet) != std::string::npos)
    return "\"answer_id\" is not a 22-character shortuuid";
  if (!j.contains("model_id") || !j["model_id"].is_string() || j["model_id"].get<std::string>().empty())
    return "\"model_id\" is not a non-empty string";
  if (!j.contains("tstamp") || !j["tstamp"].is_number()) return "\"tstamp\" is not a number";
  if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty())
    return "\"choices\" is not a non-empty list";
  const auto& c = j["choices"][0];
  if (!c.is_object() || !c.contains("index") || c["index"] != 0) return "choices[0].index is not 0";
  if (!c.contains("turns") || !c["turns"].is_array()) return "choices[0].turns is not a list";
  if (c["turns"].size() != q.turns.size())
    return "choices[0].turns has " + std::to_string(c["turns"].size()) + " answers for " +
           std::to_string(q.turns.size()) + " turns";
  for (const auto& t : c["turns"])
    if (!t.is_string()) return "choices[0].turns holds a non-string";
  return "";
}

}  // namespace sft::eval
