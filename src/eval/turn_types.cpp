#include "turn_types.h"

#include <cmath>
#include <cstdint>
#include <map>

namespace sft::eval {

std::vector<bool> constant_answer_turns(const std::vector<std::string>& references) {
  std::map<std::string, int> count;
  for (const auto& r : references) ++count[r];
  std::vector<bool> out;
  for (const auto& r : references) out.push_back(count[r] >= kConstantAnswerTurns);
  return out;
}

nlohmann::ordered_json turn_type_summary(const std::vector<std::string>& references,
                                         const std::vector<bool>& correct,
                                         const std::vector<ReferenceLikelihood>& likelihood) {
  const std::vector<bool> constant = constant_answer_turns(references);
  std::int64_t n[2] = {0, 0}, ok[2] = {0, 0};  // [0] open, [1] constant
  for (std::size_t i = 0; i < references.size(); ++i) {
    ++n[constant[i]];
    ok[constant[i]] += i < correct.size() && correct[i];
  }
  auto acc = [](std::int64_t c, std::int64_t t) {
    return t ? nlohmann::ordered_json(static_cast<double>(c) / static_cast<double>(t))
             : nlohmann::ordered_json();
  };
  nlohmann::ordered_json out = {{"constant_turns", n[1]},
                                {"correct_constant_turns", ok[1]},
                                {"constant_turn_accuracy", acc(ok[1], n[1])},
                                {"open_turns", n[0]},
                                {"correct_open_turns", ok[0]},
                                {"open_turn_accuracy", acc(ok[0], n[0])},
                                {"constant_answer_min_turns", kConstantAnswerTurns}};
  if (likelihood.size() != references.size()) return out;
  double sum[2] = {0, 0};
  std::int64_t tokens[2] = {0, 0}, unscored = 0;
  for (std::size_t i = 0; i < references.size(); ++i) {
    sum[constant[i]] += likelihood[i].log_likelihood;
    tokens[constant[i]] += likelihood[i].tokens;
    unscored += likelihood[i].tokens == 0;
  }
  auto geo = [&](int k) {
    return tokens[k] ? nlohmann::ordered_json(std::exp(sum[k] / static_cast<double>(tokens[k])))
                     : nlohmann::ordered_json();
  };
  out["open_turn_likelihood"] = geo(0);
  out["open_turn_reference_tokens"] = tokens[0];
  out["constant_turn_likelihood"] = geo(1);
  out["likelihood_turns_unscored"] = unscored;  // longer than the model's positions: left out, counted
  return out;
}

}  // namespace sft::eval
