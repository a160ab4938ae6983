// sft eval: GSM8K accuracy, HumanEval pass@k (sandboxed), MT-Bench answers and the shipped
// synthetic skills, generated with a model folder, or scored from another system's outputs.
#include <sys/stat.h>

#include <iostream>
#include <sstream>

#include "cli/commands.h"
#include "sft/config/run_config.h"
#include "sft/data/chat_template.h"
#include "sft/data/tokenizer.h"
#include "sft/eval/evaluator.h"
#include "sft/util/safe_io.h"
#include "sft/eval/jsonl.h"
#include "sft/train/trainer.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft::cli {
namespace {

using nlohmann::ordered_json;

struct EvalArgs {
  eval::EvalRequest req;
  std::string benchmarks, model, tokenizer, out, system, predictions, samples, device = "auto",
                                                                               dtype = "fp32";
  int threads = 0;
  bool json = false;
  eval::InputLimits limits;
};
EvalArgs E;

using config::Benchmark;

std::vector<Benchmark> split_benchmarks(const std::string& s) {
  std::vector<Benchmark> out;
  std::stringstream ss(s);
  std::string b;
  const std::string names = config::choice_list<Benchmark>();
  while (std::getline(ss, b, ',')) {
    if (b.empty()) continue;
    const auto benchmark = config::parse_choice<Benchmark>(b);
    if (!benchmark) throw ConfigError("--benchmark: \"" + b + "\" is not one of " + names);
    if (std::find(out.begin(), out.end(), *benchmark) == out.end()) out.push_back(*benchmark);
  }
  if (out.empty()) throw ConfigError("--benchmark: give one of " + names);
  return out;
}

std::string model_folder_name(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const std::string name = fs::basename(dir);
  return name.empty() || name == "." ? "sft" : name;
}

// Scores another system's outputs: --predictions (gsm8k, math) or --samples (humaneval, code).
ordered_json score_outputs(Benchmark b) {
  eval::EvalRequest r = E.req;
  r.benchmark = config::name(b);
  const std::string data = eval::resolve_data(r);
  ordered_json res;
  if (!E.predictions.empty()) {
    if (eval::benchmark_kind(b) != Benchmark::kGsm8k)
      throw ConfigError("--predictions scores gsm8k or math (use --samples for code)");
    res = eval::score_gsm8k_predictions(E.predictions, data, r.limit);
  } else {
    if (eval::benchmark_kind(b) != Benchmark::kHumaneval)
      throw ConfigError("--samples scores humaneval or code");
    res = eval::score_humaneval_samples(E.samples, data, r.sandbox, r.limit);
  }
  res["benchmark"] = config::name(b);
  return res;
}

// The flags' checks that need no file; ConfigError (exit 2) naming the flag.
void check_flags(const std::vector<Benchmark>& benchmarks, bool scoring) {
  if (!E.predictions.empty() && !E.samples.empty())
    throw ConfigError("give --predictions or --samples, not both");
  if (benchmarks.size() > 1 && (scoring || !E.req.data.empty() || !E.req.answers_path.empty()))
    throw ConfigError("--data, --predictions, --samples and --answer-file take a single --benchmark");
  if (scoring && !E.model.empty())
    throw ConfigError("--model generates; --predictions/--samples score existing outputs: give one");
  if (E.req.batch_size < 1) throw ConfigError("--batch-size must be at least 1");
  if (E.req.sandbox.timeout_s <= 0) throw ConfigError("--timeout must be positive (seconds per problem)");
  if (E.req.limit < 0)
    throw ConfigError("--limit: " + std::to_string(E.req.limit) +
                      " is negative; give N >= 1, or leave it out for every item");
}

// Checked before the evaluation runs: --out must be a file, and none of the inputs.
void check_out_path() {
  if (E.out.empty()) return;
  struct stat out {};
  if (::stat(E.out.c_str(), &out) != 0) return;
  if (S_ISDIR(out.st_mode))
    throw ConfigError("--out: " + E.out + " is a folder; give the results file's path");
  for (const std::string* in : {&E.samples, &E.predictions, &E.req.data, &E.req.answers_path}) {
    struct stat st {};
    if (!in->empty() && ::stat(in->c_str(), &st) == 0 && st.st_dev == out.st_dev && st.st_ino == out.st_ino)
      throw ConfigError("--out: " + E.out + " is the input " + *in +
                        "; writing results there would replace it");
  }
}

// Loads --model and runs every benchmark with it.
std::vector<ordered_json> generate(const std::vector<Benchmark>& benchmarks) {
  if (E.model.empty())
    throw ConfigError("give --model DIR (or --predictions / --samples to score existing outputs)");
  for (Benchmark b : benchmarks) {  // check data paths before loading the model
    eval::EvalRequest r = E.req;
    r.benchmark = config::name(b);
    eval::resolve_data(r);
  }
  config::TrainSpec ts;
  ts.device = E.device;
  ts.threads = E.threads;
  const c10::Device dev = train::setup_device(ts);
  auto m = as_input_error(
      [&] { return eval::load_model_for_eval(E.model, dev, E.req.bf16); });  // bad input: exit 2
  const std::string tok_path = E.tokenizer.empty() ? E.model : E.tokenizer;
  if (!fs::exists(tok_path)) throw ConfigError(tok_path + ": tokenizer not found (give --tokenizer FILE)");
  auto tok = data::Tokenizer::load(tok_path);
  std::vector<ordered_json> results;
  for (Benchmark b : benchmarks) {
    eval::EvalRequest r = E.req;
    r.benchmark = config::name(b);
    r.model_name = E.model;
    if (r.model_id.empty()) r.model_id = model_folder_name(E.model);
    if (b == Benchmark::kMtbench && r.answers_path.empty()) {
      // FastChat's layout: data/mt_bench/model_answer/<model_id>.jsonl
      const std::string dir = E.out.empty() || fs::dirname(E.out).empty() ? "." : fs::dirname(E.out);
      r.answers_path = fs::join(fs::join(dir, "model_answer"), r.model_id + ".jsonl");
    }
    results.push_back(eval::run_benchmark(*m, *tok, r));
  }
  return results;
}

// One benchmark's results as they are; several keyed by benchmark under each field.
ordered_json combine(std::vector<ordered_json>& results, const std::vector<Benchmark>& benchmarks) {
  if (results.size() == 1) return results.front();
  std::string names;
  for (Benchmark b : benchmarks) names += (names.empty() ? "" : ",") + config::name(b);
  ordered_json all = {{"benchmark", names},
                      {"model", E.model},
                      {"data", ordered_json::object()},
                      {"settings", ordered_json::object()},
                      {"summary", ordered_json::object()},
                      {"samples", ordered_json::object()}};
  for (auto& r : results) {
    const std::string b = r["benchmark"].get<std::string>();
    all["data"][b] = r["data"];
    all["settings"][b] = r["settings"];
    all["summary"][b] = r["summary"];
    all["samples"][b] = r["samples"];
  }
  return all;
}

int run_eval() {
  eval::set_input_limits(E.limits);
  const auto benchmarks = split_benchmarks(E.benchmarks);
  const bool scoring = !E.predictions.empty() || !E.samples.empty();
  check_flags(benchmarks, scoring);
  if (!E.system.empty()) E.req.system_message = E.system;
  E.req.bf16 = config::parse_choice<config::ComputeDtype>(E.dtype) == config::ComputeDtype::kBf16;
  check_out_path();
  std::vector<ordered_json> results;
  if (scoring)
    results.push_back(score_outputs(benchmarks.front()));
  else
    results = generate(benchmarks);
  const ordered_json all = combine(results, benchmarks);
  if (!E.out.empty()) {
    const std::string dir = fs::dirname(E.out);
    if (!dir.empty()) fs::make_dirs(dir);
    fs::write_file_atomic(E.out, all.dump(1) + "\n");
  }
  // With --json, stdout holds only the JSON and the summary lines go to stderr.
  if (E.json) std::cout << all.dump(1) << "\n";
  for (const auto& r : results) (E.json ? std::cerr : std::cout) << eval::summary_line(r) << "\n";
  return 0;
}

}  // namespace

std::vector<Command> register_eval(CLI::App& app) {
  auto* c = app.add_subcommand(
      "eval",
      "evaluate a model: gsm8k | humaneval | mtbench, or the synthetic math | code | general "
      "(comma-separated for several); or score another system's --predictions / --samples");
  auto& r = E.req;
  r.model_id.clear();  // the model folder's name unless --model-id
  c->add_option("--model", E.model, "Hugging Face model folder to generate with");
  c->add_option("--benchmark", E.benchmarks,
                "gsm8k | humaneval | mtbench | math | code | general, or a list: math,code,general")
      ->required();
  c->add_option(
      "--data", r.data,
      "benchmark file (required for gsm8k, humaneval: .jsonl or .jsonl.gz, mtbench: question.jsonl; "
      "default for math/code/general: data/tiny/*_test.*)");
  c->add_option("--limit", r.limit, "only the first N items (default: all)");
  c->add_option("--batch-size", r.batch_size, "prompts generated together (default 8)")
      ->check(in_range(1, 1 << 16));
  c->add_option("--out", E.out, "write results.json: {benchmark, model, data, settings, summary, samples}");
  c->add_flag("--json", E.json, "print the whole results JSON on stdout (the summary line goes to stderr)");
  c->add_option("--template", r.template_name, "chat template (default vicuna_v1.1, as in the paper)")
      ->check(CLI::IsMember(data::ChatTemplate::names()));
  c->add_option("--system", E.system, "system message replacing the template's default");
  c->add_option(
       "--max-new-tokens", r.max_new_tokens,
       "tokens per answer at most (default: gsm8k/humaneval 512, mtbench 1024, math 256, code/general 128)")
      ->check(in_range(1, 1 << 20));
  c->add_option("--tokenizer", E.tokenizer,
                "tokenizer.model, tokenizer.json, or a folder holding one (default: MODEL)");
  c->add_option("--num-samples", r.num_samples,
                "humaneval/code: completions per problem, for pass@k (default 1, greedy)")
      ->check(in_range(1, 10000));
  c->add_option("--temperature", r.temperature,
                "sampling temperature (default: greedy; mtbench: FastChat's per-category values; 0.8 with "
                "--num-samples > 1)")
      ->check(in_range(0, 100));
  c->add_option("--seed", r.seed, "seed for sampling and MT-Bench answer ids (default 0)");
  c->add_option("--workers", r.sandbox.workers, "humaneval/code: programs run in parallel (default 4)")
      ->check(in_range(1, 1024));
  c->add_option("--timeout", r.sandbox.timeout_s,
                "humaneval/code: wall-clock seconds per program (default 10)")
      ->check(in_range(0, 86400, /*lo_open=*/true));
  c->add_flag(
      "--unsafe-no-sandbox", r.sandbox.unsafe_no_sandbox,
      "run generated code without namespaces or privilege drop (only where the sandbox is unavailable)");
  c->add_option("--python", r.sandbox.python,
                "python interpreter for humaneval/code (default /usr/bin/python3)");
  c->add_option("--model-id", r.model_id,
                "mtbench: model_id in the answer file (default: the model folder's name)");
  c->add_option(
      "--answer-file", r.answers_path,
      "mtbench: answer file (default: model_answer/<model-id>.jsonl beside --out, or in the working folder)");
  c->add_option(
      "--predictions", E.predictions,
      "gsm8k/math: score these predictions (jsonl {\"prediction\", \"idx\"?}) against --data, no model");
  c->add_option(
      "--samples", E.samples,
      "humaneval/code: score these human-eval samples (jsonl {task_id, completion}) against --data");
  c->add_option("--max-input-bytes", E.limits.max_input_bytes,
                "refuse an input file holding (or decompressing to) more bytes (default 1 GiB)")
      ->check(in_range(1, 1LL << 50));
  c->add_option("--max-record-bytes", E.limits.max_record_bytes,
                "refuse an input line of more bytes (default 8 MiB)")
      ->check(in_range(1, 1LL << 40));
  c->add_option("--device", E.device, "auto | cpu | cuda | cuda:N");
  c->add_option("--dtype", E.dtype,
                "generation precision: fp32, or bf16 (autocast on CPU; bf16 weights on a GPU)")
      ->check(CLI::IsMember(config::choice_names<config::ComputeDtype>()));
  c->add_option("--threads", E.threads, "intra-op threads (default: every usable core)")
      ->check(in_range(0, 4096));
  return {{c, run_eval}};
}

}  // namespace sft::cli
