#include "sft/eval/evaluator.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <functional>
#include <fstream>

#include "sft/config/run_config.h"
#include "sft/data/chat_template.h"
#include "sft/data/readers.h"
#include "sft/eval/gsm8k.h"
#include "sft/eval/humaneval.h"
#include "sft/eval/jsonl.h"
#include "sft/eval/mtbench.h"
#include "sft/eval/text_generation.h"
#include "sft/model/hf_checkpoint.h"
#include "sft/util/cuda.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"
#include "sft/util/log.h"
#include "sft/util/rng.h"

namespace sft::eval {
namespace {

using nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// ---- batched generation with a context budget ----------------------------------------

struct GenItem {
  std::vector<std::int32_t> prompt;
  double temperature = 0;
};

struct GenSettings {
  std::string label;  // for progress lines
  std::int64_t max_new_tokens = 256, batch_size = 8, top_k = 0;
  double top_p = 1.0;
  std::uint64_t seed = 0;
  bool bf16 = false;
  std::vector<std::string> stop_strings;
  int rank = 0, world = 1;  // batches are generated round-robin over the ranks
  std::function<std::vector<std::string>(const std::string&)> all_gather;
  double memory_budget_bytes = 0;  // <= 0: measured
};

// Memory the generation may take on the model's device (half of what is free: the rest is
// the allocator's and the model's working room). On a GPU, CUDA's free memory plus what the
// caching allocator holds unused; on the CPU, MemAvailable.
double free_bytes(c10::Device device) {
  if (device.is_cuda()) {
    const auto st = cuda::memory_stats(device.index());
    return 0.5 * (static_cast<double>(cuda::free_memory(device.index())) + static_cast<double>(st.reserved - st.allocated));
  }
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kb = 0;
  while (in >> key >> kb) {
    if (key == "MemAvailable:") return 0.5 * kb * 1024.0;
    in.ignore(1 << 10, '\n');
  }
  return 1e18;  // unknown: no cap
}

struct Generated {
  std::vector<TextResult> out;
  std::int64_t prompts_truncated = 0;
};

// Generates every item. Batches hold prompts of one temperature and similar length (longest
// first), so little padding is decoded and each batch gets the longest budget that fits the
// context: min(max_new_tokens, context - longest prompt). A prompt that would leave fewer
// than min(max_new_tokens, context/4) tokens keeps only its last tokens.
Generated generate_all(const model::Llama& m, const data::Tokenizer& tok, std::vector<GenItem> items, const GenSettings& s) {
  Generated g;
  g.out.resize(items.size());
  const std::int64_t ctx = m.config().max_position_embeddings;
  const std::int64_t reserve = std::max<std::int64_t>(1, std::min(s.max_new_tokens, ctx / 4));
  for (auto& it : items) {
    const auto keep = static_cast<std::size_t>(ctx - reserve);
    if (it.prompt.size() > keep) {
      it.prompt.erase(it.prompt.begin(), it.prompt.end() - static_cast<std::ptrdiff_t>(keep));
      ++g.prompts_truncated;
    }
  }
  std::vector<std::size_t> order(items.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (items[a].temperature != items[b].temperature) return items[a].temperature < items[b].temperature;
    return items[a].prompt.size() > items[b].prompt.size();
  });
  const auto bs = static_cast<std::size_t>(std::max<std::int64_t>(1, s.batch_size));
  std::vector<std::int64_t> stop_ids;
  for (auto id : m.config().eos_token_ids) stop_ids.push_back(id);
  // The batches, formed as on one rank (every rank forms the same list): prompts of one
  // temperature, longest first, at most batch_size of them, and no more than the device's
  // free memory holds (the smallest over the ranks): a batch shrinks rather than fail.
  double room = s.memory_budget_bytes > 0 ? s.memory_budget_bytes : free_bytes(m.device());
  if (s.world > 1 && s.all_gather)
    for (const auto& r : s.all_gather(std::to_string(room))) room = std::min(room, std::stod(r));
  struct Batch {
    std::size_t first, end;
    std::int64_t max_new_tokens;
  };
  std::vector<Batch> batches;
  std::size_t shrunk = 0;
  for (std::size_t i = 0; i < order.size();) {
    const auto longest = static_cast<std::int64_t>(items[order[i]].prompt.size());
    const std::int64_t new_tokens = std::max<std::int64_t>(1, std::min(s.max_new_tokens, ctx - longest));
    const auto fits = static_cast<std::size_t>(
        std::max(1.0, std::floor(room / model::generation_bytes_per_row(m.config(), longest + new_tokens, m.dtype() == at::kBFloat16 ? 2 : 4))));
    const std::size_t cap = std::min(bs, fits);
    shrunk += cap < bs;
    std::size_t j = i;
    while (j < order.size() && j - i < cap && items[order[j]].temperature == items[order[i]].temperature) ++j;
    batches.push_back({i, j, new_tokens});
    i = j;
  }
  if (shrunk) sft::log::warn("{}: {} batch(es) smaller than {} to fit the memory", s.label, shrunk, bs);
  auto last_log = Clock::now();
  const auto start = last_log;
  std::size_t done = 0;
  nlohmann::json mine = nlohmann::json::array();  // this rank's outputs, for the others
  for (std::size_t batch_no = 0; batch_no < batches.size(); ++batch_no) {
    if (static_cast<int>(batch_no % static_cast<std::size_t>(std::max(1, s.world))) != s.rank) continue;
    const Batch& b = batches[batch_no];
    std::vector<TextRequest> reqs;
    for (std::size_t k = b.first; k < b.end; ++k) reqs.push_back({items[order[k]].prompt});
    TextOptions o;
    o.gen.max_new_tokens = b.max_new_tokens;
    o.gen.temperature = items[order[b.first]].temperature;
    o.gen.top_k = o.gen.temperature > 0 ? s.top_k : 0;
    o.gen.top_p = o.gen.temperature > 0 ? s.top_p : 1.0;
    o.gen.seed = seed_combine(s.seed, batch_no);
    o.gen.stop_ids = stop_ids;
    o.gen.bf16 = s.bf16;
    o.stop_strings = s.stop_strings;
    o.batch_size = static_cast<std::int64_t>(reqs.size());
    auto res = generate_text(m, tok, reqs, o);
    for (std::size_t k = 0; k < res.size(); ++k) {
      const std::size_t at = order[b.first + k];
      if (s.world > 1)
        mine.push_back({at, res[k].text, res[k].prompt_tokens, res[k].new_tokens, res[k].finish_reason});
      g.out[at] = std::move(res[k]);
    }
    done += res.size();
    if (std::chrono::duration<double>(Clock::now() - last_log).count() > 20 && done < order.size()) {
      last_log = Clock::now();
      sft::log::info("{}: {}/{} generated ({:.0f} s)", s.label, done, order.size(),
                   std::chrono::duration<double>(last_log - start).count());
    }
  }
  if (s.world > 1 && s.all_gather)
    for (const auto& theirs : s.all_gather(mine.dump()))
      for (const auto& o : nlohmann::json::parse(theirs))
        g.out[o[0].get<std::size_t>()] = {o[1].get<std::string>(), o[2].get<std::int64_t>(), o[3].get<std::int64_t>(),
                                          o[4].get<std::string>()};
  return g;
}

GenSettings settings_for(const EvalRequest& req, const data::ChatTemplate& tmpl) {
  GenSettings s;
  s.label = req.benchmark;
  s.max_new_tokens = req.max_new_tokens > 0 ? req.max_new_tokens : default_max_new_tokens(req.benchmark);
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

double greedy_unless_set(const EvalRequest& req) { return req.temperature > 0 ? req.temperature : 0.0; }

// ---- the benchmarks ---------------------------------------------------------------------

ordered_json run_gsm8k(const model::Llama& m, const data::Tokenizer& tok, const EvalRequest& req, const std::string& path) {
  const auto tmpl = data::ChatTemplate::create(req.template_name, req.system_message);
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
  const auto tmpl = data::ChatTemplate::create(req.template_name, req.system_message);
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

ordered_json run_mtbench(const model::Llama& m, const data::Tokenizer& tok, const EvalRequest& req, const std::string& path) {
  const auto tmpl = data::ChatTemplate::create(req.template_name, req.system_message);
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
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::vector<std::size_t> by_id(questions.size());
  std::iota(by_id.begin(), by_id.end(), 0);
  std::stable_sort(by_id.begin(), by_id.end(),
                   [&](std::size_t a, std::size_t b) { return questions[a].question_id < questions[b].question_id; });
  ordered_json samples = ordered_json::array();
  std::string file;
  for (std::size_t i : by_id) {
    ordered_json line = mtbench_answer(questions[i], short_uuid(rng), req.model_id, answers[i], now);
    if (std::string bad = check_mtbench_answer(nlohmann::json::parse(line.dump()), questions[i]); !bad.empty())
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
      {"judge", "not run (no network here): score the answer file with FastChat's llm_judge "
                "(put it in data/mt_bench/model_answer/, then gen_judgment.py and show_result.py)"},
      {"prompts_truncated", truncated}};
  return {{"summary", summary}, {"samples", samples}};
}

ordered_json run_general(const model::Llama& m, const data::Tokenizer& tok, const EvalRequest& req, const std::string& path) {
  const auto tmpl = data::ChatTemplate::create(req.template_name, req.system_message);
  config::DatasetSpec spec;
  spec.name = "general";
  spec.path = path;
  spec.format = config::Format::kSharegpt;
  auto records = data::read_dataset(spec, config::OnBadRecord::kError, false, input_limits().max_record_bytes).records;
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
  std::vector<bool> conv_ok(records.size(), true);
  for (std::size_t k = 0; k < g.out.size(); ++k) {
    const auto [i, t] = where[k];
    const std::string& ref = records[i].turns[2 * t + 1].content;
    const bool ok = trim(g.out[k].text) == trim(ref);
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
  const double turn_acc = g.out.empty() ? 0.0 : static_cast<double>(correct) / static_cast<double>(g.out.size());
  const double conv_acc = records.empty() ? 0.0 : static_cast<double>(convs_ok) / static_cast<double>(records.size());
  ordered_json summary = {{"metric", "exact_match"},
                          {"score", turn_acc},
                          {"turn_accuracy", turn_acc},
                          {"conversation_accuracy", conv_acc},
                          {"correct_turns", correct},
                          {"turns", g.out.size()},
                          {"correct_conversations", convs_ok},
                          {"conversations", records.size()},
                          {"prompts_truncated", g.prompts_truncated}};
  return {{"summary", summary}, {"samples", samples}};
}

ordered_json wrap(const std::string& benchmark, const std::string& model, const std::string& data, ordered_json settings,
                  ordered_json scored, double seconds) {
  ordered_json out = {{"benchmark", benchmark},
                      {"model", model.empty() ? ordered_json() : ordered_json(model)},
                      {"data", data},
                      {"settings", std::move(settings)}};
  out["summary"] = std::move(scored["summary"]);
  out["summary"]["seconds"] = seconds;
  out["samples"] = std::move(scored["samples"]);
  return out;
}

std::string exe_dir() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  buf[n] = '\0';
  return fs::dirname(buf);
}

}  // namespace

const std::vector<std::string>& benchmark_names() {
  static const std::vector<std::string> names = {"gsm8k", "humaneval", "mtbench", "math", "code", "general"};
  return names;
}

std::string benchmark_kind(const std::string& b) {
  if (b == "gsm8k" || b == "math") return "gsm8k";
  if (b == "humaneval" || b == "code") return "humaneval";
  return b;
}

std::string default_data(const std::string& b) {
  if (b == "math") return "data/tiny/math_test.jsonl";
  if (b == "code") return "data/tiny/code_test.jsonl";
  if (b == "general") return "data/tiny/general_test.json";
  return "";
}

std::int64_t default_max_new_tokens(const std::string& b) {
  if (b == "gsm8k" || b == "humaneval") return 512;
  if (b == "mtbench") return 1024;  // FastChat's gen_model_answer default
  if (b == "math") return 256;
  return 128;  // code, general: the synthetic answers are one line
}

std::string resolve_data(const EvalRequest& req, const std::string& key) {
  // Errors name the config key when the request comes from a run config, else the CLI flag.
  const std::string name_key = key.empty() ? "--benchmark" : key + ".name";
  const std::string data_key = key.empty() ? "--data" : key + ".data";
  const auto& names = benchmark_names();
  if (std::find(names.begin(), names.end(), req.benchmark) == names.end())
    throw ConfigError(name_key + ": \"" + req.benchmark + "\" is not one of gsm8k, humaneval, mtbench, math, code, general");
  std::string path = req.data.empty() ? default_data(req.benchmark) : req.data;
  if (path.empty())
    throw ConfigError((key.empty() ? "--benchmark " + req.benchmark + " needs --data FILE"
                                   : data_key + ": missing; " + req.benchmark + " needs its data file") +
                      " (" +
                      (req.benchmark == "gsm8k"       ? "GSM8K's test.jsonl"
                       : req.benchmark == "humaneval" ? "HumanEval.jsonl.gz"
                                                      : "FastChat's mt_bench/question.jsonl") +
                      ")");
  if (fs::exists(path)) {
    if (fs::is_dir(path)) throw ConfigError(data_key + ": " + path + " is a folder, not a data file");
    return path;
  }
  if (path[0] != '/') {
    const std::string dir = exe_dir();
    for (const std::string& base : {fs::join(dir, ".."), dir})
      if (!dir.empty() && fs::exists(fs::join(base, path)) && !fs::is_dir(fs::join(base, path))) return fs::join(base, path);
  }
  throw ConfigError(data_key + ": " + path + " not found" +
                    (req.data.empty() ? " (run from the repository root, or give " + data_key + ")" : ""));
}

void check_eval_config(const config::RunConfig& cfg) {
  if (!cfg.eval.at_end && !cfg.eval.at_stage_end) return;
  // "config.yaml:57: " where the key was written in the file, "" when it came from --set.
  auto where = [&](const std::string& key) -> std::string {
    for (const auto& s : cfg.settings)
      if (s.key == key && s.source.rfind("file:", 0) == 0) return cfg.source_file + ":" + s.source.substr(5) + ": ";
    return "";
  };
  for (std::size_t i = 0; i < cfg.eval.benchmarks.size(); ++i) {
    const auto& b = cfg.eval.benchmarks[i];
    const std::string key = "eval.benchmarks[" + std::to_string(i) + "]";
    EvalRequest req;
    req.benchmark = b.name;
    req.data = b.data;
    std::string path;
    try {
      path = resolve_data(req, key);
    } catch (const ConfigError& e) {
      const std::string msg = e.what();
      throw ConfigError(where(msg.rfind(key + ".name", 0) == 0 ? key + ".name" : key + ".data") + msg);
    }
    // Parsed in full now, as the evaluation will parse it after training.
    std::size_t items = 0;
    try {
      const std::string kind = benchmark_kind(b.name);
      if (kind == "gsm8k") items = load_gsm8k(path, b.limit).size();
      else if (kind == "humaneval") items = load_problems(path, b.limit).size();
      else if (kind == "mtbench") items = load_mtbench_questions(path, b.limit).size();
      else {
        config::DatasetSpec spec;
        spec.name = b.name;
        spec.path = path;
        spec.format = config::Format::kSharegpt;
        items = data::read_dataset(spec, config::OnBadRecord::kError, false, input_limits().max_record_bytes).records.size();
      }
    } catch (const Error& e) {
      std::string msg = e.what();
      // The training readers' hint about data.on_bad_record does not apply to eval data.
      if (auto hint = msg.find(" (data.on_bad_record"); hint != std::string::npos) msg.resize(hint);
      throw ConfigError(where(key + ".data") + key + ".data: " + msg + "; fix the file or point " + key +
                        ".data at a good one");
    }
    if (items == 0) throw ConfigError(where(key + ".data") + key + ".data: " + path + " holds no " + b.name + " items");
  }
}

std::unique_ptr<model::Llama> load_model_for_eval(const std::string& dir, c10::Device device, bool bf16) {
  return model::load_hf_model(dir, device, device.is_cuda() && bf16 ? c10::kBFloat16 : c10::kFloat);
}

ordered_json run_benchmark(const model::Llama& m, const data::Tokenizer& tok, const EvalRequest& req) {
  const std::string path = resolve_data(req);
  const std::string kind = benchmark_kind(req.benchmark);
  const auto start = Clock::now();
  sft::log::info("eval {}: {} ({} template{})", req.benchmark, path, req.template_name,
               req.limit > 0 ? ", first " + std::to_string(req.limit) : std::string());
  ordered_json scored = kind == "gsm8k"       ? run_gsm8k(m, tok, req, path)
                        : kind == "humaneval" ? run_humaneval(m, tok, req, path)
                        : kind == "mtbench"   ? run_mtbench(m, tok, req, path)
                                              : run_general(m, tok, req, path);
  if (req.rank != 0) return ordered_json::object();
  ordered_json settings = {{"template", req.template_name},
                           {"system_message", req.system_message ? ordered_json(*req.system_message) : ordered_json()},
                           {"max_new_tokens", req.max_new_tokens > 0 ? req.max_new_tokens : default_max_new_tokens(req.benchmark)},
                           {"batch_size", req.batch_size},
                           {"limit", req.limit > 0 ? ordered_json(req.limit) : ordered_json()},
                           {"temperature", req.temperature >= 0 ? ordered_json(req.temperature) : ordered_json("default")},
                           {"seed", req.seed},
                           {"bf16", req.bf16}};
  if (kind == "humaneval") {
    settings["num_samples"] = std::max<std::int64_t>(1, req.num_samples);
    settings["timeout_s"] = req.sandbox.timeout_s;
    settings["workers"] = req.sandbox.workers;
  }
  return wrap(req.benchmark, req.model_name, path, std::move(settings), std::move(scored),
              std::chrono::duration<double>(Clock::now() - start).count());
}

ordered_json score_gsm8k_predictions(const std::string& predictions, const std::string& reference, std::int64_t limit) {
  const auto start = Clock::now();
  auto items = load_gsm8k(reference);
  const auto in_file = static_cast<std::int64_t>(items.size());
  if (limit > 0 && limit < in_file) items.resize(static_cast<std::size_t>(limit));
  const auto preds = load_gsm8k_predictions(predictions, items, in_file);
  ordered_json scored = score_gsm8k(items, preds);
  return wrap("gsm8k", "", reference, {{"predictions", predictions}}, std::move(scored),
              std::chrono::duration<double>(Clock::now() - start).count());
}

ordered_json score_humaneval_samples(const std::string& samples, const std::string& problems,
                                     const SandboxOptions& sandbox, std::int64_t limit) {
  const auto start = Clock::now();
  const auto kept = load_problems(problems, limit);
  std::vector<std::string> all_ids;
  if (limit > 0)
    for (const auto& p : load_problems(problems)) all_ids.push_back(p.task_id);
  ordered_json settings = {{"samples", samples}, {"timeout_s", sandbox.timeout_s}, {"workers", sandbox.workers}};
  ordered_json scored = score_humaneval(kept, load_samples(samples), sandbox, all_ids);
  return wrap("humaneval", "", problems, std::move(settings), std::move(scored),
              std::chrono::duration<double>(Clock::now() - start).count());
}

std::string summary_line(const ordered_json& r) {
  const auto& s = r.at("summary");
  const std::string b = r.at("benchmark").get<std::string>();
  const std::string kind = benchmark_kind(b);
  char buf[512];
  if (kind == "gsm8k") {
    std::snprintf(buf, sizeof buf, "%s: accuracy %.4f (%lld/%lld)", b.c_str(), s.at("accuracy").get<double>(),
                  static_cast<long long>(s.at("correct").get<std::int64_t>()), static_cast<long long>(s.at("n").get<std::int64_t>()));
  } else if (kind == "humaneval") {
    std::string line = b + ":";
    for (const char* k : {"pass@1", "pass@10", "pass@100"})
      if (s.contains(k)) {
        std::snprintf(buf, sizeof buf, " %s %.4f", k, s.at(k).get<double>());
        line += buf;
      }
    std::snprintf(buf, sizeof buf, " (%lld/%lld samples passed, %lld tasks%s)", static_cast<long long>(s.at("passed").get<std::int64_t>()),
                  static_cast<long long>(s.at("samples").get<std::int64_t>()), static_cast<long long>(s.at("tasks").get<std::int64_t>()),
                  s.at("sandbox").get<bool>() ? "" : ", NO SANDBOX");
    return line + buf;
  } else if (kind == "mtbench") {
    std::snprintf(buf, sizeof buf, "%s: %lld questions answered%s%s; judge not run (no network): use FastChat's gen_judgment.py",
                  b.c_str(), static_cast<long long>(s.at("questions").get<std::int64_t>()),
                  s.at("answer_file").is_string() ? " -> " : "",
                  s.at("answer_file").is_string() ? s.at("answer_file").get<std::string>().c_str() : "");
  } else {
    std::snprintf(buf, sizeof buf, "%s: exact match %.4f of turns (%lld/%lld), %.4f of conversations (%lld/%lld)", b.c_str(),
                  s.at("turn_accuracy").get<double>(), static_cast<long long>(s.at("correct_turns").get<std::int64_t>()),
                  static_cast<long long>(s.at("turns").get<std::int64_t>()), s.at("conversation_accuracy").get<double>(),
                  static_cast<long long>(s.at("correct_conversations").get<std::int64_t>()),
                  static_cast<long long>(s.at("conversations").get<std::int64_t>()));
  }
  return buf;
}

}  // namespace sft::eval
