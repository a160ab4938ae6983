// The evaluator's entry points (evaluator.h): the benchmark table and the data files,
// checking a run config's eval block, run_benchmark (which dispatches to benchmark_runs.cpp
// and wraps the results), scoring outputs made elsewhere, and the one-line summary.
#include "sft/eval/evaluator.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "evaluator_internal.h"
#include "sft/config/run_config.h"
#include "sft/data/readers.h"
#include "sft/eval/gsm8k.h"
#include "sft/eval/humaneval.h"
#include "sft/eval/jsonl.h"
#include "sft/eval/mtbench.h"
#include "sft/eval/sandbox.h"
#include "sft/model/hf_checkpoint.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/log.h"

namespace sft::eval {
namespace {

using nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

ordered_json wrap(const std::string& benchmark, const std::string& model, const std::string& data,
                  ordered_json settings, ordered_json scored, double seconds) {
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

std::size_t count_gsm8k(const std::string& path, std::int64_t limit) {
  return load_gsm8k(path, limit).size();
}
std::size_t count_humaneval(const std::string& path, std::int64_t limit) {
  return load_problems(path, limit).size();
}
std::size_t count_mtbench(const std::string& path, std::int64_t limit) {
  return load_mtbench_questions(path, limit).size();
}
std::size_t count_general(const std::string& path, std::int64_t /*limit*/) {
  config::DatasetSpec spec;
  spec.name = "general";
  spec.path = path;
  spec.format = config::Format::kSharegpt;
  return data::read_dataset(spec, config::OnBadRecord::kError, false, input_limits().max_record_bytes)
      .records.size();
}

long long count_of(const ordered_json& s, const char* key) {
  return static_cast<long long>(s.at(key).get<std::int64_t>());
}

std::string gsm8k_line(const std::string& b, const ordered_json& s) {
  char buf[512];
  std::snprintf(buf, sizeof buf, "%s: accuracy %.4f (%lld/%lld)", b.c_str(), s.at("accuracy").get<double>(),
                count_of(s, "correct"), count_of(s, "n"));
  return buf;
}

std::string humaneval_line(const std::string& b, const ordered_json& s) {
  char buf[512];
  std::string line = b + ":";
  for (const char* k : {"pass@1", "pass@10", "pass@100"})
    if (s.contains(k)) {
      std::snprintf(buf, sizeof buf, " %s %.4f", k, s.at(k).get<double>());
      line += buf;
    }
  std::snprintf(buf, sizeof buf, " (%lld/%lld samples passed, %lld tasks%s)", count_of(s, "passed"),
                count_of(s, "samples"), count_of(s, "tasks"),
                s.at("sandbox").get<bool>() ? "" : ", NO SANDBOX");
  return line + buf;
}

std::string mtbench_line(const std::string& b, const ordered_json& s) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%s: %lld questions answered%s%s; judge not run (no network): use FastChat's gen_judgment.py",
                b.c_str(), count_of(s, "questions"), s.at("answer_file").is_string() ? " -> " : "",
                s.at("answer_file").is_string() ? s.at("answer_file").get<std::string>().c_str() : "");
  return buf;
}

std::string general_line(const std::string& b, const ordered_json& s) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%s: exact match %.4f of turns (%lld/%lld), %.4f of conversations (%lld/%lld)", b.c_str(),
                s.at("turn_accuracy").get<double>(), count_of(s, "correct_turns"), count_of(s, "turns"),
                s.at("conversation_accuracy").get<double>(), count_of(s, "correct_conversations"),
                count_of(s, "conversations"));
  return buf;
}

using config::Benchmark;
// In config::Choices<Benchmark>'s order. The synthetic skills (math, code, general) ship their
// data and answer in a line or a few (code, general: one line).
const BenchmarkRow kBenchmarks[] = {
    {Benchmark::kGsm8k, Benchmark::kGsm8k, "", "GSM8K's test.jsonl", 512, false, count_gsm8k, run_gsm8k,
     gsm8k_line},
    {Benchmark::kHumaneval, Benchmark::kHumaneval, "", "HumanEval.jsonl.gz", 512, true, count_humaneval,
     run_humaneval, humaneval_line},
    // 1024: FastChat's gen_model_answer default.
    {Benchmark::kMtbench, Benchmark::kMtbench, "", "FastChat's mt_bench/question.jsonl", 1024, false,
     count_mtbench, run_mtbench, mtbench_line},
    {Benchmark::kMath, Benchmark::kGsm8k, "data/tiny/math_test.jsonl", "", 256, false, count_gsm8k, run_gsm8k,
     gsm8k_line},
    {Benchmark::kCode, Benchmark::kHumaneval, "data/tiny/code_test.jsonl", "", 128, true, count_humaneval,
     run_humaneval, humaneval_line},
    {Benchmark::kGeneral, Benchmark::kGeneral, "data/tiny/general_test.json", "", 128, false, count_general,
     run_general, general_line},
};

// The row `name` names; ConfigError "<key>: "x" is not one of ..." when none.
const BenchmarkRow& row_named(const std::string& name, const std::string& key) {
  const auto b = config::parse_choice<Benchmark>(name);
  if (!b) throw ConfigError(key + ": \"" + name + "\" is not one of " + config::choice_list<Benchmark>());
  return benchmark_row(*b);
}

}  // namespace

const BenchmarkRow& benchmark_row(config::Benchmark b) {
  for (const auto& row : kBenchmarks)
    if (row.benchmark == b) return row;
  throw Error("benchmark " + config::name(b) + " has no row in the evaluator's table");
}

const BenchmarkRow& benchmark_row(const std::string& name) { return row_named(name, "--benchmark"); }

config::Benchmark benchmark_kind(config::Benchmark b) { return benchmark_row(b).kind; }
std::string default_data(config::Benchmark b) { return benchmark_row(b).default_data; }
std::int64_t default_max_new_tokens(config::Benchmark b) { return benchmark_row(b).max_new_tokens; }

std::string resolve_data(const EvalRequest& req, const std::string& key) {
  // Errors name the config key when the request comes from a run config, else the CLI flag.
  const std::string name_key = key.empty() ? "--benchmark" : key + ".name";
  const std::string data_key = key.empty() ? "--data" : key + ".data";
  const BenchmarkRow& row = row_named(req.benchmark, name_key);
  std::string path = req.data.empty() ? std::string(row.default_data) : req.data;
  if (path.empty())
    throw ConfigError((key.empty() ? "--benchmark " + req.benchmark + " needs --data FILE"
                                   : data_key + ": missing; " + req.benchmark + " needs its data file") +
                      " (" + row.data_needed + ")");
  if (fs::exists(path)) {
    if (fs::is_dir(path)) throw ConfigError(data_key + ": " + path + " is a folder, not a data file");
    return path;
  }
  if (path[0] != '/') {
    const std::string dir = exe_dir();
    for (const std::string& base : {fs::join(dir, ".."), dir})
      if (!dir.empty() && fs::exists(fs::join(base, path)) && !fs::is_dir(fs::join(base, path)))
        return fs::join(base, path);
  }
  throw ConfigError(data_key + ": " + path + " not found" +
                    (req.data.empty() ? " (run from the repository root, or give " + data_key + ")" : ""));
}

void check_eval_config(const config::RunConfig& cfg) {
  if (!cfg.eval.at_end && !cfg.eval.at_stage_end) return;
  // "config.yaml:57: " where the key was written in the file, "" when it came from --set.
  auto where = [&](const std::string& key) -> std::string {
    for (const auto& s : cfg.settings)
      if (s.key == key && s.source.rfind("file:", 0) == 0)
        return cfg.source_file + ":" + s.source.substr(5) + ": ";
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
    const BenchmarkRow& row = benchmark_row(b.name);
    std::size_t items = 0;
    try {
      items = row.count_items(path, b.limit);
    } catch (const Error& e) {
      std::string msg = e.what();
      // The training readers' hint about data.on_bad_record does not apply to eval data.
      if (auto hint = msg.find(" (data.on_bad_record"); hint != std::string::npos) msg.resize(hint);
      throw ConfigError(where(key + ".data") + key + ".data: " + msg + "; fix the file or point " + key +
                        ".data at a good one");
    }
    if (items == 0)
      throw ConfigError(where(key + ".data") + key + ".data: " + path + " holds no " + b.name + " items");
    // Code is scored by running the model's programs in the sandbox: a node where it cannot
    // run (no user namespaces for this user, no root) is found now, not after the training.
    std::string why;
    if (row.sandboxed && !sandbox_available(&why))
      throw ConfigError(
          where(key + ".name") + key + ": " + b.name +
          " runs the model's programs in sft's sandbox, which cannot run on this node (" + why +
          "). Evaluate on a node that allows unprivileged user namespaces (or as root), leave " + b.name +
          " out of eval.benchmarks here and run `sft eval --model <output_dir>/final --benchmark " + b.name +
          "` later on such a node, or set eval.at_end: false");
  }
}

std::unique_ptr<model::Llama> load_model_for_eval(const std::string& dir, c10::Device device, bool bf16) {
  return model::load_hf_model(dir, device, device.is_cuda() && bf16 ? c10::kBFloat16 : c10::kFloat);
}

ordered_json run_benchmark(const model::Llama& m, const data::Tokenizer& tok, const EvalRequest& req) {
  const std::string path = resolve_data(req);
  const BenchmarkRow& row = benchmark_row(req.benchmark);
  const auto start = Clock::now();
  sft::log::info("eval {}: {} ({} template{})", req.benchmark, path, req.template_name,
                 req.limit > 0 ? ", first " + std::to_string(req.limit) : std::string());
  ordered_json scored = row.run(m, tok, req, path);
  if (req.rank != 0) return ordered_json::object();
  ordered_json settings = {
      {"template", req.template_name},
      {"system_message", req.system_message ? ordered_json(*req.system_message) : ordered_json()},
      {"max_new_tokens", req.max_new_tokens > 0 ? req.max_new_tokens : row.max_new_tokens},
      {"batch_size", req.batch_size},
      {"limit", req.limit > 0 ? ordered_json(req.limit) : ordered_json()},
      {"temperature", req.temperature >= 0 ? ordered_json(req.temperature) : ordered_json("default")},
      {"seed", req.seed},
      {"bf16", req.bf16}};
  if (row.sandboxed) {
    settings["num_samples"] = std::max<std::int64_t>(1, req.num_samples);
    settings["timeout_s"] = req.sandbox.timeout_s;
    settings["workers"] = req.sandbox.workers;
  }
  return wrap(req.benchmark, req.model_name, path, std::move(settings), std::move(scored),
              std::chrono::duration<double>(Clock::now() - start).count());
}

ordered_json score_gsm8k_predictions(const std::string& predictions, const std::string& reference,
                                     std::int64_t limit) {
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
  ordered_json settings = {
      {"samples", samples}, {"timeout_s", sandbox.timeout_s}, {"workers", sandbox.workers}};
  ordered_json scored = score_humaneval(kept, load_samples(samples), sandbox, all_ids);
  return wrap("humaneval", "", problems, std::move(settings), std::move(scored),
              std::chrono::duration<double>(Clock::now() - start).count());
}

std::string summary_line(const ordered_json& r) {
  const std::string b = r.at("benchmark").get<std::string>();
  const auto benchmark = config::parse_choice<config::Benchmark>(b).value_or(config::Benchmark::kGeneral);
  return benchmark_row(benchmark).summary(b, r.at("summary"));
}

}  // namespace sft::eval
