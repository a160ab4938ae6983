// General chat turns split into constant-answer and open turns, on the shipped test set.
#include "eval/turn_types.h"

#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace sft::eval {
namespace {

TEST(TurnTypes, ConstantAnswersAreTheReferencesSharedByManyTurns) {
  std::vector<std::string> refs(kConstantAnswerTurns, "You're welcome!");
  refs.push_back("The last word is silver.");
  refs.push_back("The last word is silver.");
  refs.push_back("Paris.");
  const std::vector<bool> constant = constant_answer_turns(refs);
  EXPECT_TRUE(constant[0]);
  EXPECT_FALSE(constant[kConstantAnswerTurns]);  // shared by two turns: still an answer to its prompt
  EXPECT_FALSE(constant.back());
  std::vector<bool> correct(refs.size(), true);
  correct.back() = false;
  const auto s = turn_type_summary(refs, correct);
  EXPECT_EQ(s["constant_turns"], kConstantAnswerTurns);
  EXPECT_EQ(s["open_turns"], 3);
  EXPECT_EQ(s["correct_open_turns"], 2);
  EXPECT_NEAR(s["open_turn_accuracy"].get<double>(), 2.0 / 3, 1e-12);
  EXPECT_TRUE(turn_type_summary({}, {})["open_turn_accuracy"].is_null());
}

// Likelihood is pooled over a type's reference tokens (a long answer weighs more than a short
// one), then exponentiated: the geometric-mean probability of a reference token.
TEST(TurnTypes, LikelihoodIsTheGeometricMeanTokenProbabilityOfEachType) {
  std::vector<std::string> refs(kConstantAnswerTurns, "You're welcome!");
  refs.push_back("The last word is silver.");
  refs.push_back("Paris.");
  std::vector<ReferenceLikelihood> lik(kConstantAnswerTurns, {std::log(0.5) * 4, 4});
  lik.push_back({std::log(0.25) * 6, 6});
  lik.push_back({std::log(0.8) * 2, 2});
  const auto s = turn_type_summary(refs, std::vector<bool>(refs.size(), false), lik);
  EXPECT_NEAR(s["constant_turn_likelihood"].get<double>(), 0.5, 1e-12);
  EXPECT_NEAR(s["open_turn_likelihood"].get<double>(), std::exp((6 * std::log(0.25) + 2 * std::log(0.8)) / 8),
              1e-12);
  EXPECT_EQ(s["open_turn_reference_tokens"], 8);
  EXPECT_EQ(s["likelihood_turns_unscored"], 0);
  lik.back() = {};  // a turn too long to score: left out of its type's likelihood, and counted
  const auto t = turn_type_summary(refs, std::vector<bool>(refs.size(), false), lik);
  EXPECT_NEAR(t["open_turn_likelihood"].get<double>(), 0.25, 1e-12);
  EXPECT_EQ(t["likelihood_turns_unscored"], 1);
  // Without one likelihood per turn there is no likelihood field, rather than a wrong one.
  EXPECT_FALSE(
      turn_type_summary(refs, std::vector<bool>(refs.size(), false)).contains("open_turn_likelihood"));
}

// The count: 156 of the 375 general test turns are thanks, refusals or identity.
TEST(TurnTypes, TheTinyGeneralTestSetHas156ConstantAnswerTurns) {
  const auto data = nlohmann::json::parse(test::read(test::tiny("general_test.json")));
  std::vector<std::string> refs;
  for (const auto& conv : data)
    for (const auto& t : conv["conversations"])
      if (t["from"] == "gpt") refs.push_back(t["value"].get<std::string>());
  ASSERT_EQ(refs.size(), 375u);
  const auto s = turn_type_summary(refs, std::vector<bool>(refs.size(), false));
  EXPECT_EQ(s["constant_turns"], 156);
  EXPECT_EQ(s["open_turns"], 219);
}

}  // namespace
}  // namespace sft::eval
