#include "sft/eval/humaneval.h"

#include <algorithm>
#include <limits>
#include <map>
#include <set>

#include "sft/eval/jsonl.h"
#include "sft/util/error.h"

namespace sft::eval {
namespace {

constexpr const char* kStopSequences[] = {"\nclass", "\ndef", "\n#", "\nif", "\nprint"};

std::size_t first_stop(const std::string& s, std::size_t from) {
  std::size_t cut = std::string::npos;
  for (const char* stop : kStopSequences) {
    auto p = s.find(stop, from);
    if (p != std::string::npos && p < cut) cut = p;
  }
  return cut;
}

// The contents of the first ``` fenced block, or the text itself when there is none.
std::string unfence(const std::string& text) {
  const auto open = text.find("```");
  if (open == std::string::npos) return text;
  const auto body = text.find('\n', open);
  if (body == std::string::npos) return text;
  const auto close = text.find("```", body + 1);
  return text.substr(body + 1, close == std::string::npos ? std::string::npos : close - body - 1);
}

}  // namespace

std::vector<Problem> load_problems(const std::string& path, std::int64_t limit) {
  std::vector<Problem> out;
  std::set<std::string> seen;
  for_each_json_line(path, [&](const nlohmann::json& j, const std::string& where) {
    Problem p{string_field(j, "task_id", where), string_field(j, "prompt", where), "",
              string_field(j, "test", where), string_field(j, "entry_point", where)};
    if (j.contains("canonical_solution") && j["canonical_solution"].is_string())
      p.canonical_solution = j["canonical_solution"].get<std::string>();
    if (!seen.insert(p.task_id).second)
      throw DataError(where + ": task_id \"" + p.task_id + "\" appears twice");
    if (limit <= 0 || static_cast<std::int64_t>(out.size()) < limit) out.push_back(std::move(p));
  });
  if (out.empty()) throw DataError(path + ": no HumanEval problems");
  return out;
}

std::vector<Completion> load_samples(const std::string& path) {
  std::vector<Completion> out;
  for_each_json_line(path, [&](const nlohmann::json& j, const std::string& where) {
    out.push_back({string_field(j, "task_id", where), string_field(j, "completion", where), std::nullopt});
  });
  return out;
}

std::string humaneval_instruction(const Problem& p) {
  return "Complete the following Python function.\n" + p.prompt;
}

std::string humaneval_completion(const Problem& p, const std::string& generated) {
  std::string code = unfence(generated);
  const auto def = code.find("def " + p.entry_point + "(");
  if (def != std::string::npos) {
    const auto line_end = code.find('\n', def);
    if (line_end != std::string::npos) code = code.substr(0, first_stop(code, line_end));
    return "\n" + code;
  }
  return code.substr(0, first_stop(code, 0));
}

std::string humaneval_program(const Problem& p, const std::string& completion) {
  return p.prompt + completion + "\n" + p.test + "\n" + "check(" + p.entry_point + ")";
}

double pass_at_k(std::int64_t n, std::int64_t c, std::int64_t k) {
  if (n < 1 || c < 0 || c > n || k < 1 || k > n)
    throw Error("pass_at_k: need 0 <= c <= n and 1 <= k <= n (n=" + std::to_string(n) +
                ", c=" + std::to_string(c) + ", k=" + std::to_string(k) + ")");
  if (n - c < k) return 1.0;
  double fail = 1.0;  // C(n-c, k) / C(n, k) = prod_{i=n-c+1..n} (1 - k/i)
  for (std::int64_t i = n - c + 1; i <= n; ++i) fail *= 1.0 - static_cast<double>(k) / static_cast<double>(i);
  return 1.0 - fail;
}

nlohmann::ordered_json score_humaneval(const std::vector<Problem>& problems,
                                       const std::vector<Completion>& completions,
                                       const SandboxOptions& sandbox,
                                       const std::vector<std::string>& known_task_ids) {
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < problems.size(); ++i) index[problems[i].task_id] = i;
  const std::set<std::string> known(known_task_ids.begin(), known_task_ids.end());

  std::vector<std::string> programs;
  std::vector<std::size_t> scored;  // positions in `completions` that are run
  std::vector<std::int64_t> n(problems.size(), 0), c(problems.size(), 0);
  for (std::size_t i = 0; i < completions.size(); ++i) {
    auto it = index.find(completions[i].task_id);
    if (it == index.end()) {
      if (known.count(completions[i].task_id)) continue;
      throw DataError("sample " + std::to_string(i) + ": task_id \"" + completions[i].task_id +
                      "\" is not in the problems file");
    }
    ++n[it->second];
    scored.push_back(i);
    programs.push_back(humaneval_program(problems[it->second], completions[i].completion) + "\n");
  }
  std::int64_t min_n = std::numeric_limits<std::int64_t>::max();
  for (std::size_t t = 0; t < problems.size(); ++t) {
    if (n[t] == 0)
      throw DataError("no sample for " + problems[t].task_id +
                      ": every problem needs at least one completion " +
                      "(score a prefix of the problems with --limit N)");
    min_n = std::min(min_n, n[t]);
  }
  // Under the harness: exiting early with status 0 or printing cannot pass (sandbox.h).
  const auto results = run_programs(programs, sandbox, PassRule::harness);

  nlohmann::ordered_json samples = nlohmann::ordered_json::array();
  std::int64_t passed = 0, timed_out = 0;
  for (std::size_t r = 0; r < results.size(); ++r) {
    const Completion& comp = completions[scored[r]];
    const std::size_t t = index.at(comp.task_id);
    c[t] += results[r].passed;
    passed += results[r].passed;
    timed_out += results[r].result == "timed out";
    nlohmann::ordered_json s = {{"task_id", comp.task_id}};
    if (comp.generated) s["generated"] = *comp.generated;
    s["completion"] = comp.completion;
    s["result"] = results[r].result;
    s["passed"] = results[r].passed;
    samples.push_back(std::move(s));
  }
  nlohmann::ordered_json summary = {{"metric", "pass@1"}, {"score", nullptr}};
  for (std::int64_t k : {1, 10, 100}) {
    if (k > min_n) continue;
    double sum = 0;
    for (std::size_t t = 0; t < problems.size(); ++t) sum += pass_at_k(n[t], c[t], k);
    summary["pass@" + std::to_string(k)] = sum / static_cast<double>(problems.size());
    if (k == 1) summary["score"] = summary["pass@1"];
  }
  summary["tasks"] = problems.size();
  summary["samples"] = results.size();
  summary["passed"] = passed;
  summary["timed_out"] = timed_out;
  summary["sandbox"] = !sandbox.unsafe_no_sandbox;
  return {{"summary", summary}, {"samples", samples}};
}

}  // namespace sft::eval
