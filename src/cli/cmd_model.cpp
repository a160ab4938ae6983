// sft score | generate: use a Hugging Face model folder directly.

#include <cmath>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "sft/config/run_config.h"
#include "sft/data/chat_template.h"
#include "sft/data/tokenizer.h"
#include "sft/eval/text_generation.h"
#include "sft/model/generate.h"
#include "sft/model/hf_checkpoint.h"
#include "sft/train/trainer.h"
#include "sft/util/error.h"
#include "sft/util/safe_io.h"
#include "sft/util/fs.h"
#include "sft/util/log.h"

namespace sft::cli {
namespace {

using nlohmann::ordered_json;

struct ModelArgs {
  std::string model, tokenizer, ids, text, input, dtype = "fp32", device = "auto";
  bool no_bos = false, json = false, no_cache = false;
  int threads = 0;
  // generate
  std::vector<std::string> prompts;
  std::string prompts_file, tmpl, system;
  std::int64_t max_new_tokens = 256, top_k = 0, batch_size = 8;
  double temperature = 0.0, top_p = 1.0;
  std::uint64_t seed = 0;
};
ModelArgs M;
CLI::App* score_cmd = nullptr;

bool bf16() { return config::parse_choice<config::ComputeDtype>(M.dtype) == config::ComputeDtype::kBf16; }

c10::Device pick_device() {
  config::TrainSpec t;
  t.device = M.device;
  t.threads = M.threads;
  return train::setup_device(t);
}

// --dtype bf16 on a GPU holds the weights in bf16, as the evaluator does (eval::load_model_for_eval,
// the path `sft train` evaluates with); on the CPU the weights stay fp32 under bf16 autocast.
std::unique_ptr<model::Llama> load_model(const c10::Device& dev) {
  // A corrupt or mismatched model folder the user named is bad input (exit code 2).
  return as_input_error([&] {
    return model::load_hf_model(M.model, dev, dev.is_cuda() && bf16() ? c10::kBFloat16 : c10::kFloat);
  });
}

std::shared_ptr<const data::Tokenizer> tokenizer_or_null(bool required) {
  const std::string path = M.tokenizer.empty() ? M.model : M.tokenizer;
  const bool found = fs::exists(path) && (!fs::is_dir(path) || fs::exists(fs::join(path, "tokenizer.json")) ||
                                          fs::exists(fs::join(path, "tokenizer.model")));
  if (!found) {
    if (required)
      throw ConfigError(
          path + ": no tokenizer (give --tokenizer, or put tokenizer.json or tokenizer.model in --model)");
    return nullptr;
  }
  return data::Tokenizer::load(path);
}

// Ids the model cannot embed stop here, naming where they came from (not "index out of range").
void check_ids(const model::Llama& m, const std::vector<std::int64_t>& ids, const std::string& where) {
  for (auto id : ids)
    if (id < 0 || id >= m.config().vocab_size)
      throw ConfigError(where + ": token id " + std::to_string(id) +
                        " is outside the model's vocabulary [0, " + std::to_string(m.config().vocab_size) +
                        ")");
}

void check_vocabulary(const model::Llama& m, const data::Tokenizer& tok) {
  if (tok.vocab_size() > m.config().vocab_size)
    throw ConfigError(tok.path() + ": the tokenizer has " + std::to_string(tok.vocab_size()) +
                      " pieces, the model's "
                      "vocabulary only " +
                      std::to_string(m.config().vocab_size) + " (" + M.model +
                      "/config.json vocab_size); give the model's own tokenizer");
}

ordered_json score_json(const model::Llama& m, const std::vector<std::int64_t>& ids,
                        const std::string& where) {
  // Past its positions the model's scores mean nothing (and attention's cost grows as n^2).
  if (static_cast<std::int64_t>(ids.size()) > m.config().max_position_embeddings)
    throw DataError(where + ": " + std::to_string(ids.size()) + " tokens, more than the model's " +
                    std::to_string(m.config().max_position_embeddings) +
                    " positions (config.json max_position_embeddings); score a shorter text");
  auto lp = model::score(m, ids, bf16());
  ordered_json arr = ordered_json::array();
  double sum = 0;
  for (const auto& v : lp) {
    if (v) {
      arr.push_back(*v);
      sum += *v;
    } else {
      arr.push_back(nullptr);
    }
  }
  ordered_json j = {{"logprobs", arr}, {"ids", ids}, {"sum_logprob", sum}};
  if (ids.size() > 1) j["perplexity"] = std::exp(-sum / static_cast<double>(ids.size() - 1));
  return j;
}

std::vector<std::int64_t> text_ids(const data::Tokenizer& tok, const std::string& text) {
  auto v = eval::raw_prompt(tok, text, !M.no_bos);
  return {v.begin(), v.end()};
}

int run_score() {
  const int given =
      static_cast<int>(score_cmd->count("--ids") + score_cmd->count("--text") + score_cmd->count("--input"));
  if (given != 1) throw ConfigError("give exactly one of --ids, --text, --input");
  if (score_cmd->count("--ids") && M.ids.empty())
    throw ConfigError("--ids: empty; give comma-separated token ids, e.g. 1,5,9");
  c10::Device dev = pick_device();
  auto m = load_model(dev);
  if (score_cmd->count("--ids")) {
    const auto ids = parse_token_ids(M.ids, "--ids");
    check_ids(*m, ids, "--ids");
    std::cout << score_json(*m, ids, "--ids").dump() << "\n";
    return 0;
  }
  if (score_cmd->count("--text")) {
    auto tok = tokenizer_or_null(true);
    check_vocabulary(*m, *tok);
    std::cout << score_json(*m, text_ids(*tok, M.text), "--text").dump() << "\n";
    return 0;
  }
  std::ifstream in(M.input);
  if (!in) throw Error(M.input + ": cannot open");
  std::shared_ptr<const data::Tokenizer> tok;
  std::string line;
  std::int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      throw DataError(M.input + ":" + std::to_string(lineno) + ": malformed JSON: " + json_error_text(e));
    }
    std::vector<std::int64_t> ids;
    const std::string at = M.input + ":" + std::to_string(lineno);
    if (!j.is_object())
      throw ConfigError(at + ": expected {\"ids\": [...]} or {\"text\": \"...\"}, got " +
                        j.dump().substr(0, 80));
    if (j.contains("ids")) {
      const auto& a = j["ids"];
      if (!a.is_array())
        throw ConfigError(at + ": \"ids\" must be a list of integers such as [1, 5, 9], got " +
                          a.dump().substr(0, 80));
      for (const auto& x : a) {
        if (!x.is_number_integer())
          throw ConfigError(at + ": \"ids\" holds " + x.dump().substr(0, 40) + ", not an integer token id");
        ids.push_back(x.get<std::int64_t>());
      }
      check_ids(*m, ids, at + ": ids");
    } else if (j.contains("text") && j["text"].is_string()) {
      if (!tok) {
        tok = tokenizer_or_null(true);
        check_vocabulary(*m, *tok);
      }
      ids = text_ids(*tok, j["text"].get<std::string>());
    } else {
      throw DataError(M.input + ":" + std::to_string(lineno) +
                      ": expected {\"ids\": [...]} or {\"text\": \"...\"}");
    }
    ordered_json out = score_json(*m, ids, at);
    out["line"] = lineno;
    std::cout << out.dump() << "\n";
  }
  return 0;
}

int run_generate() {
  std::vector<std::string> prompts = M.prompts;
  if (!M.prompts_file.empty()) {
    std::ifstream in(M.prompts_file);
    if (!in) throw Error(M.prompts_file + ": cannot open");
    std::string line;
    while (std::getline(in, line)) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      if (line[0] == '{') {
        auto j = nlohmann::json::parse(line);
        if (!j.contains("prompt") || !j["prompt"].is_string())
          throw DataError(M.prompts_file + ": each JSON line needs a string \"prompt\"");
        prompts.push_back(j["prompt"]);
      } else {
        prompts.push_back(line);
      }
    }
  }
  if (prompts.empty()) throw ConfigError("give --prompt TEXT (repeatable) or --prompts FILE");
  c10::Device dev = pick_device();
  auto m = load_model(dev);
  auto tok = tokenizer_or_null(true);
  check_vocabulary(*m, *tok);
  std::vector<eval::TextRequest> reqs;
  eval::TextOptions opts;
  if (!M.tmpl.empty()) {
    auto tmpl = data::ChatTemplate::create(
        M.tmpl, M.system.empty() ? std::nullopt : std::optional<std::string>(M.system), tok.get());
    tmpl.check_tokenizer(*tok);
    for (const auto& p : prompts) {
      data::Record r;
      r.turns.push_back({data::Role::kUser, p});
      reqs.push_back({eval::chat_prompt(tmpl, *tok, r, 0)});
    }
    opts.stop_strings = tmpl.stop_strings();
  } else {
    for (const auto& p : prompts) reqs.push_back({eval::raw_prompt(*tok, p)});
  }
  for (auto id : m->config().eos_token_ids) opts.gen.stop_ids.push_back(id);
  opts.gen.max_new_tokens = M.max_new_tokens;
  opts.gen.temperature = M.temperature;
  opts.gen.top_p = M.top_p;
  opts.gen.top_k = M.top_k;
  opts.gen.seed = M.seed;
  opts.gen.use_cache = !M.no_cache;
  opts.gen.bf16 = bf16();
  opts.batch_size = M.batch_size;
  auto results = eval::generate_text(*m, *tok, reqs, opts);
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (M.json) {
      std::cout << ordered_json{{"prompt", prompts[i]},
                                {"text", results[i].text},
                                {"prompt_tokens", results[i].prompt_tokens},
                                {"new_tokens", results[i].new_tokens},
                                {"finish_reason", results[i].finish_reason}}
                       .dump()
                << "\n";
    } else if (results.size() == 1) {
      std::cout << results[i].text << "\n";
    } else {
      std::cout << "### " << prompts[i] << "\n" << results[i].text << "\n\n";
    }
  }
  return 0;
}

void common(CLI::App* c) {
  c->add_option("--model", M.model, "Hugging Face model folder (config.json, *.safetensors)")->required();
  c->add_option("--tokenizer", M.tokenizer,
                "tokenizer.model, tokenizer.json, or a folder holding one (default: MODEL)");
  c->add_option("--dtype", M.dtype,
                "compute precision: fp32, or bf16 (autocast on the CPU; bf16 weights on a GPU, as sft eval)")
      ->check(CLI::IsMember(config::choice_names<config::ComputeDtype>()));
  c->add_option("--device", M.device, "auto | cpu | cuda | cuda:N");
  c->add_option("--threads", M.threads, "intra-op threads (default: every usable core)")
      ->check(in_range(0, 4096));
}

}  // namespace

std::vector<Command> register_model(CLI::App& app) {
  auto* score = score_cmd = app.add_subcommand(
      "score", "print log p(id_i | ids_<i) for a sequence as JSON {\"logprobs\": [null, ...]}");
  common(score);
  score->add_option("--ids", M.ids, "comma-separated token ids, e.g. 1,5,9");
  score->add_option("--text", M.text, "text to tokenize (BOS prepended unless --no-bos)");
  score->add_option("--input", M.input,
                    "JSON lines of {\"ids\": [...]} or {\"text\": \"...\"}: one result per line");
  score->add_flag("--no-bos", M.no_bos, "do not prepend BOS to --text");

  auto* gen = app.add_subcommand("generate",
                                 "generate text with the KV cache (greedy, or sampled with --temperature)");
  common(gen);
  gen->add_option("--prompt", M.prompts, "prompt (repeatable)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  gen->add_option("--prompts", M.prompts_file,
                  "file of prompts: one per line, or JSON lines with \"prompt\"");
  gen->add_option("--template", M.tmpl, "wrap each prompt as a user turn of this chat template")
      ->check(CLI::IsMember(data::ChatTemplate::names()));
  gen->add_option("--system", M.system, "system message for --template");
  gen->add_option("--max-new-tokens", M.max_new_tokens, "tokens to generate at most (default 256)")
      ->check(in_range(1, 1 << 20));
  gen->add_option("--temperature", M.temperature, "0 = greedy (default)")->check(in_range(0, 100));
  gen->add_option("--top-p", M.top_p, "nucleus sampling mass (default 1)")
      ->check(in_range(0, 1, /*lo_open=*/true));
  gen->add_option("--top-k", M.top_k, "sample among the k most likely tokens (0 = all)")
      ->check(in_range(0, 1 << 30));
  gen->add_option("--seed", M.seed, "sampling seed");
  gen->add_option("--batch-size", M.batch_size, "prompts decoded together (default 8)")
      ->check(in_range(1, 1 << 16));
  gen->add_flag("--no-cache", M.no_cache, "recompute the whole prefix each step (slow; for checking)");
  gen->add_flag("--json", M.json, "one JSON object per prompt");
  return {{score, run_score}, {gen, run_generate}};
}

}  // namespace sft::cli
