// General chat turns by type. A test turn is constant-answer when its reference text is the
// reference of at least kConstantAnswerTurns turns of the test set: thanks, refusals, identity
// ("You're welcome! ...", 156 of the 375 turns of data/tiny/general_test.json), the same string
// whatever the prompt, so matching it checks a memorised string rather than a conversation. The
// rest are open turns, on which the miniature's general claims are decided
// (configs/repro/analysis_plan.yaml). Internal to src/eval.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sft::eval {

inline constexpr int kConstantAnswerTurns = 10;

std::vector<bool> constant_answer_turns(const std::vector<std::string>& references);

// The reference answer of one turn, teacher-forced after its prompt: the sum of its tokens'
// log-probabilities (the answer's trained tokens, its end token included) and their count.
struct ReferenceLikelihood {
  double log_likelihood = 0;
  std::int64_t tokens = 0;
};

// constant_turns, correct_constant_turns, constant_turn_accuracy, open_turns, correct_open_turns,
// open_turn_accuracy (null where a type has no turns). references[i] scored correct[i].
// With `likelihood` (one per reference): open_turn_likelihood and constant_turn_likelihood,
// exp(sum of log-likelihoods / tokens) over a type's turns: the geometric-mean probability the
// model gives a reference token, in (0, 1]. Unlike exact match it moves before an answer is
// wholly right, so it does not sit at 0 where the model cannot yet copy a name.
// likelihood_turns_unscored counts the turns with no scored token (longer than the model's
// positions), which the likelihoods leave out.
nlohmann::ordered_json turn_type_summary(const std::vector<std::string>& references,
                                         const std::vector<bool>& correct,
                                         const std::vector<ReferenceLikelihood>& likelihood = {});

}  // namespace sft::eval
