// The benchmarks the evaluator runs with a model: GSM8K-format maths, HumanEval-format code
// (run in the sandbox), MT-Bench answers for FastChat's judge, and exact-match general
// conversations; each builds its prompts, generates them (batched_generation.cpp) and scores.
#include <algorithm>
#include <chrono>
#include <numeric>

#include "evaluator_internal.h"
#include "turn_types.h"
#include "sft/config/run_config.h"
#include "sft/data/chat_template.h"
#include "sft/data/readers.h"
#include "sft/eval/gsm8k.h"
#include "sft/eval/humaneval.h"
#include "sft/eval/jsonl.h"
#include "sft/eval/mtbench.h"
#include "sft/model/generate.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"
#include "sft/util/rng.h"

namespace sft::eval {
namespace {

using nlohmann::ordered_json;

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

GenSettings settings_for(const EvalRequest& req, const data::ChatTemplate& tmpl) {
  GenSettings s;
  s.label = req.benchmark;
  s.max_new_tokens =
      req.max_new_tokens > 0 ? req.max_new_tokens : benchmark_row(req.benchmark).max_new_tokens;
  s.batch_size = req.batch_size;
  s.seed = req.seed;
  s.bf16 = req.bf16;
  s.stop_strings = tmpl.stop_strings();
  s.rank = req.rank;
  s.world = req.world;
  s.all_gather = req.all_gather;
  s.memory_budget_bytes = req.memory_budget_bytes;
  return s;
}

// The request's template (auto: the tokenizer folder's), checked against the tokenizer.
data::ChatTemplate template_of(const EvalRequest& req, const data::Tokenizer& tok) {
  auto t = data::ChatTemplate::create(req.template_name, req.system_message, &tok);
  t.check_tokenizer(tok);
  return t;
}

double greedy_unless_set(const EvalRequest& req) { return req.temperature > 0 ? req.temperature : 0.0; }

}  // namespace

ordered_json run_gsm8k(const model::Llama& m, const data::Tokenizer& tok, const EvalRequest& req,
                       const std::string& path) {
  const auto tmpl = template_of(req, tok);
  const auto items = load_gsm8k(path, req.limit);
  std::vector<GenItem> gen;
  for (const auto& it : items) {
    data::Record r;
    r.turns = {{data::Role::kUser, it.question}};
    gen.push_back({chat_prompt(tmpl, tok, r, 0), greedy_unless_set(req)});
  }
  auto g = generate_all(m, tok, std::move(gen), settings_for(req, tmpl));
  if (req.rank != 0) return ordered_json::object();  // rank 0 scores
  std::vector<std::string> texts;
  for (const auto& o : g.out) texts.push_back(o.text);
  ordered_json r = score_gsm8k(items, texts);
  r["summary"]["prompts_truncated"] = g.prompts_truncated;
  return r;
}

ordered_json run_humaneval(const model::Llama& m, const data::Tokenizer& tok, const EvalRequest& req,
                           const std::string& path) {
  const auto tmpl = template_of(req, tok);
  const auto problems = load_problems(path, req.limit);
  const std::int64_t n = std::max<std::int64_t>(1, req.num_samples);
  // Greedy for one sample; Codex's sampling (temperature 0.8, top-p 0.95) for pass@k.
  const double temperature = req.temperature >= 0 ? req.temperature : (n > 1 ? 0.8 : 0.0);
  std::vector<GenItem> gen;
  for (const auto& p : problems) {
    // The shipped code data's shape: instruction + "\n" + input (user_content joins them;
    // the alpaca template shows them as its Instruction and Input sections).
    data::Record r;
    r.turns = {{data::Role::kUser, "Complete the following Python function."}};
    r.input = p.prompt;
    for (std::int64_t k = 0; k < n; ++k) gen.push_back({chat_prompt(tmpl, tok, r, 0), temperature});
  }
  GenSettings s = settings_for(req, tmpl);
  s.top_p = 0.95;
  auto g = generate_all(m, tok, std::move(gen), s);
  if (req.rank != 0) return ordered_json::object();  // rank 0 runs the programs
  std::vector<Completion> completions;
  for (std::size_t i = 0; i < g.out.size(); ++i) {
    const Problem& p = problems[i / static_cast<std::size_t>(n)];
    completions.push_back({p.task_id, humaneval_completion(p, g.out[i].text), g.out[i].text});
  }
  ordered_json r = score_humaneval(problems, completions, req.sandbox);
  r["summary"]["prompts_truncated"] = g.prompts_truncated;
  return r;
}

ordered_json run_mtbench(const model::Llama& m, const data::Tokenizer& tok, const EvalRequest& req,
                         const std::string& path) {
  const auto tmpl = template_of(req, tok);
  const auto questions = load_mtbench_questions(path, req.limit);
  GenSettings s = settings_for(req, tmpl);
  s.top_k = 50;
  std::vector<std::vector<std::string>> answers(questions.size());
  std::vector<data::Record> convs(questions.size());
  std::size_t turns = 0;
  std::int64_t truncated = 0;
  for (const auto& q : questions) turns = std::max(turns, q.turns.size());
  for (std::size_t t = 0; t < turns; ++t) {
    // Turn t sees the model's own answers to the earlier turns (gen_model_answer.py).
    std::vector<GenItem> gen;
    std::vector<std::size_t> who;
    for (std::size_t i = 0; i < questions.size(); ++i) {
      if (t >= questions[i].turns.size()) continue;
      convs[i].turns.push_back({data::Role::kUser, questions[i].turns[t]});
      const double temp = req.temperature >= 0 ? req.temperature : mtbench_temperature(questions[i].category);
      gen.push_back({chat_prompt(tmpl, tok, convs[i], t), temp});
      who.push_back(i);
    }
    s.seed = seed_combine(req.seed, t);
    auto g = generate_all(m, tok, std::move(gen), s);
    truncated += g.prompts_truncated;
    for (std::size_t k = 0; k < who.size(); ++k) {
      const std::string a = trim(g.out[k].text);
      answers[who[k]].push_back(a);
      convs[who[k]].turns.push_back({data::Role::kAssistant, a});
    }
  }
  if (req.rank != 0) return ordered_json::object();  // rank 0 writes the answers
  Rng rng(seed_combine(req.seed, seed_from_string("mtbench:" + req.model_id)));
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::vector<std::size_t> by_id(questions.size());
  std::iota(by_id.begin(), by_id.end(), 0);
  std::stable_sort(by_id.begin(), by_id.end(), [&](std::size_t a, std::size_t b) {
    return questions[a].question_id < questions[b].question_id;
  });
  ordered_json samples = ordered_json::array();
  std::string file;
  for (std::size_t i : by_id) {
    ordered_json line = mtbench_answer(questions[i], short_uuid(rng), req.model_id, answers[i], now);
    if (std::string bad = check_mtbench_answer(nlohmann::json::parse(line.dump()), questions[i]);
        !bad.empty())
      throw Error("mtbench: answer to question " + std::to_string(questions[i].question_id) + ": " + bad);
    file += line.dump() + "\n";
    samples.push_back(std::move(line));
  }
  if (!req.answers_path.empty()) {
    const std::string dir = fs::dirname(req.answers_path);
    if (!dir.empty()) fs::make_dirs(dir);
    fs::write_file_atomic(req.answers_path, file);
  }
  ordered_json summary = {
      {"metric", "answers"},
      {"score", nullptr},
      {"questions", questions.size()},
      {"turns", std::accumulate(answers.begin(), answers.end(), std::size_t{0},
                                [](std::size_t acc, const auto& a) { return acc + a.size(); })},
      {"model_id", req.model_id},
      {"answer_file", req.answers_path.empty() ? ordered_json() : ordered_json(req.answers_path)},
      {"judge",
       "not run (no network here): score the answer file with FastChat's llm_judge "
       "(put it in data/mt_bench/model_answer/, then gen_judgment.py and show_result.py)"},
      {"prompts_truncated", truncated}};
  return {{"summary", summary}, {"samples", samples}};
}

namespace {

// The reference answer of user turn `turn`, teacher-forced: the conversation up to and
// including that answer as training renders it, scored in one forward pass; the answer is
// the last run of trained tokens (its text and end token).
ReferenceLikelihood reference_likelihood(const model::Llama& m, const data::Tokenizer& tok,
                                         const data::ChatTemplate& tmpl, const data::Record& r,
                                         std::size_t turn, bool bf16) {
  data::Record upto = r;
  upto.turns.resize(2 * turn + 2);
  const data::Encoded e = data::ChatTemplate::encode(tmpl.segments(upto), tok);
  std::size_t first = e.trained.size();
  while (first > 0 && !e.trained[first - 1]) --first;  // past any untrained tail
  std::size_t last = first;
  while (first > 0 && e.trained[first - 1]) --first;
  const std::int64_t positions = m.config().max_position_embeddings;
  if (last == 0 || static_cast<std::int64_t>(last) > positions) return {};  // unscorable: counts nothing
  const auto lp = model::score(m, std::vector<std::int64_t>(e.ids.begin(), e.ids.begin() + last), bf16);
  ReferenceLikelihood out;
  for (std::size_t i = std::max<std::size_t>(first, 1); i < last; ++i) {
    out.log_likelihood += *lp[i];
    ++out.tokens;
  }
  return out;
}

}  // namespace

ordered_json run_general(const model::Llama& m, const data::Tokenizer& tok, const EvalRequest& req,
                         const std::string& path) {
  const auto tmpl = template_of(req, tok);
  config::DatasetSpec spec;
  spec.name = "general";
  spec.path = path;
  spec.format = config::Format::kSharegpt;
  auto records =
      data::read_dataset(spec, config::OnBadRecord::kError, false, input_limits().max_record_bytes).records;
  if (req.limit > 0 && static_cast<std::int64_t>(records.size()) > req.limit)
    records.resize(static_cast<std::size_t>(req.limit));
  std::vector<GenItem> gen;
  std::vector<std::pair<std::size_t, std::size_t>> where;  // (conversation, turn)
  for (std::size_t i = 0; i < records.size(); ++i)
    for (std::size_t t = 0; 2 * t + 1 < records[i].turns.size(); ++t) {
      gen.push_back({chat_prompt(tmpl, tok, records[i], t), greedy_unless_set(req)});
      where.push_back({i, t});
    }
  auto g = generate_all(m, tok, std::move(gen), settings_for(req, tmpl));
  if (req.rank != 0) return ordered_json::object();  // rank 0 scores
  ordered_json samples = ordered_json::array();
  std::int64_t correct = 0;
  std::vector<bool> conv_ok(records.size(), true), turn_ok;
  std::vector<std::string> refs;  // for the split into constant-answer and open turns
  std::vector<ReferenceLikelihood> likelihood;
  for (std::size_t k = 0; k < g.out.size(); ++k) {
    const auto [i, t] = where[k];
    const std::string& ref = records[i].turns[2 * t + 1].content;
    const bool ok = trim(g.out[k].text) == trim(ref);
    refs.push_back(trim(ref));
    likelihood.push_back(reference_likelihood(m, tok, tmpl, records[i], t, req.bf16));
    turn_ok.push_back(ok);
    correct += ok;
    if (!ok) conv_ok[i] = false;
    samples.push_back({{"id", records[i].origin.id},
                       {"turn", t},
                       {"prompt", data::user_content(records[i], 2 * t)},
                       {"reference", ref},
                       {"prediction", g.out[k].text},
                       {"correct", ok}});
  }
  const auto convs_ok = std::count(conv_ok.begin(), conv_ok.end(), true);
  const double turn_acc =
      g.out.empty() ? 0.0 : static_cast<double>(correct) / static_cast<double>(g.out.size());
  const double conv_acc =
      records.empty() ? 0.0 : static_cast<double>(convs_ok) / static_cast<double>(records.size());
  ordered_json summary = {{"metric", "exact_match"},
                          {"score", turn_acc},
                          {"turn_accuracy", turn_acc},
                          {"conversation_accuracy", conv_acc},
                          {"correct_turns", correct},
                          {"turns", g.out.size()},
                          {"correct_conversations", convs_ok},
                          {"conversations", records.size()},
                          {"prompts_truncated", g.prompts_truncated}};
  summary.update(turn_type_summary(refs, turn_ok, likelihood));
  return {{"summary", summary}, {"samples", samples}};
}

}  // namespace sft::eval
