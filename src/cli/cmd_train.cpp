// sft train: run a configuration's stages.

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>

#include "sft/util/fs.h"

#include "cli/commands.h"
#include "sft/config/run_config.h"
#include "sft/data/tokenizer.h"
#include "sft/eval/evaluator.h"
#include "sft/train/dry_run.h"
#include "sft/train/trainer.h"
#include "sft/util/log.h"

namespace sft::cli {
namespace {

// Every file the run will need later is checked now, in a second, rather than after hours
// of training: the tokenizer, the model folder, and the eval block's benchmarks and data.
void check_run_inputs(const config::RunConfig& cfg) {
  if (!fs::exists(cfg.tokenizer))
    throw ConfigError("tokenizer.path: " + cfg.tokenizer +
                      " not found (a tokenizer.model, a tokenizer.json, or a folder holding one)");
  if (!cfg.model.path.empty() && !fs::is_dir(cfg.model.path))
    throw ConfigError("model.path: " + cfg.model.path +
                      " is not a folder (a Hugging Face model folder with config.json)");
  eval::check_eval_config(cfg);
}

// --resume's values: the one place its text is read.
enum class Resume { kNever, kAuto };
const std::map<std::string, Resume> kResumeValues = {{"auto", Resume::kAuto}, {"never", Resume::kNever}};

struct TrainArgs {
  std::string path, output_dir, profile_steps;
  Resume resume = Resume::kNever;
  bool dry = false, json = false, overwrite = false;
  std::vector<std::string> sets, resume_overrides;
  std::vector<std::int64_t> inject_nonfinite;
};
TrainArgs T;

int print_dry_run(const config::RunConfig& cfg) {
  const char* ws = std::getenv("WORLD_SIZE");
  auto plan = train::dry_run(cfg, ws ? std::atoi(ws) : 1);
  if (T.json)
    std::cout << plan.dump(2) << "\n";
  else
    std::cout << train::format_dry_run(plan);
  return 0;
}

// --profile-steps A:B into opts.profile_first / profile_last.
void parse_profile_steps(train::TrainerOptions& opts) {
  const std::string& profile_steps = T.profile_steps;
  const auto colon = profile_steps.find(':');
  long long a = 0, b = 0;
  std::size_t used_a = 0, used_b = 0;
  try {
    a = std::stoll(profile_steps.substr(0, colon), &used_a);
    if (colon != std::string::npos) b = std::stoll(profile_steps.substr(colon + 1), &used_b);
  } catch (const std::exception&) {
    used_a = 0;
  }
  if (colon == std::string::npos || used_a != colon || used_b != profile_steps.size() - colon - 1 || a < 1 ||
      b < a)
    throw ConfigError("--profile-steps: \"" + profile_steps +
                      "\" is not A:B with 1 <= A <= B (global steps)");
  opts.profile_first = a;
  opts.profile_last = b;
}

// Each --resume-override names a setting of this config (or a section of them).
void check_resume_overrides(const config::RunConfig& cfg) {
  std::vector<std::string> keys;
  std::function<void(const nlohmann::json&, const std::string&)> flat = [&](const nlohmann::json& j,
                                                                            const std::string& at) {
    if (j.is_object())
      for (auto it = j.begin(); it != j.end(); ++it)
        flat(it.value(), at.empty() ? it.key() : at + "." + it.key());
    else if (j.is_array() && !j.empty() && j.front().is_object())
      for (std::size_t i = 0; i < j.size(); ++i) flat(j[i], at + "[" + std::to_string(i) + "]");
    else
      keys.push_back(at);
  };
  flat(cfg.to_json(), "");
  for (const auto& o : T.resume_overrides) {
    const bool known = !o.empty() && std::any_of(keys.begin(), keys.end(), [&](const std::string& k) {
      return k == o || k.rfind(o + ".", 0) == 0 || k.rfind(o + "[", 0) == 0;
    });
    if (!known)
      throw ConfigError("--resume-override '" + o + "': " +
                        (o.empty()
                             ? std::string("empty; name a setting, e.g. train.lr")
                             : std::string("no setting of this config has that name (see sft config keys)")));
  }
}

// The command that resumes this run: the same config and --set flags, its output folder.
std::string resume_command(const config::RunConfig& cfg) {
  auto quote = [](const std::string& a) {
    if (!a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                          "_-./=:,+@%") == std::string::npos)
      return a;
    std::string q = "'";
    for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  };
  std::string how = "sft train --config " + quote(T.path);
  for (const auto& s : T.sets) how += " --set " + quote(s);
  how += " --output-dir " + quote(cfg.output_dir) + " --resume auto";
  for (const auto& o : T.resume_overrides) how += " --resume-override " + quote(o);
  return how;
}

// Evaluation at stage ends / the end (the config's eval block), on the exported folder, with
// the template *template_name (template: auto is resolved when the trainer loads the data).
train::EvalHook evaluator(const config::RunConfig& cfg, std::shared_ptr<std::string> template_name) {
  return [cfg, template_name](const std::string& dir, const train::EvalShare& share) {
    auto m = eval::load_model_for_eval(dir, share.device, cfg.train.precision != config::Precision::kFp32);
    auto tok = data::Tokenizer::load(dir);  // the exported folder's tokenizer.json or tokenizer.model
    nlohmann::ordered_json all = nlohmann::ordered_json::object();
    for (const auto& b : cfg.eval.benchmarks) {
      eval::EvalRequest r;
      r.benchmark = b.name;
      r.data = b.data;
      r.limit = b.limit;
      r.batch_size = cfg.eval.batch_size;
      r.max_new_tokens = cfg.eval.max_new_tokens;
      r.template_name = *template_name;
      r.system_message = cfg.system_message;
      r.model_name = dir;
      r.bf16 = cfg.train.precision != config::Precision::kFp32;
      r.rank = share.rank;
      r.world = share.world;
      r.all_gather = share.all_gather;
      // FastChat finds answers by model_id: <model_id>.jsonl holding that model_id.
      r.model_id = cfg.run_name;
      if (config::parse_choice<config::Benchmark>(b.name) == config::Benchmark::kMtbench)
        r.answers_path = fs::join(fs::join(cfg.output_dir, "eval"), cfg.run_name + ".jsonl");
      all[b.name] = eval::run_benchmark(*m, *tok, r);
    }
    return all;
  };
}

int run_train() {
  std::vector<std::string> all = T.sets;
  if (!T.output_dir.empty()) all.push_back("output_dir=" + T.output_dir);
  config::RunConfig cfg = config::load_run_config(T.path, all);
  if (T.dry) return print_dry_run(cfg);
  sft::log::info("sft train: {} ({} strategy, {} stages) -> {}", cfg.source_file,
                 config::strategy_name(cfg.strategy), cfg.stages.size(), cfg.output_dir);
  check_run_inputs(cfg);
  train::TrainerOptions opts;
  opts.resume = T.resume == Resume::kAuto;
  opts.resume_overrides = T.resume_overrides;
  opts.overwrite = T.overwrite;
  opts.inject_nonfinite = T.inject_nonfinite;
  if (!T.profile_steps.empty()) parse_profile_steps(opts);
  if (T.overwrite && opts.resume)
    throw ConfigError("--overwrite replaces the earlier run and --resume auto continues it: give one");
  if (!T.resume_overrides.empty() && !opts.resume)
    throw ConfigError("--resume-override " + T.resume_overrides.front() +
                      ": only a resumed run (--resume auto) compares its settings with a checkpoint's");
  check_resume_overrides(cfg);
  opts.resume_command = resume_command(cfg);
  auto template_name = std::make_shared<std::string>(config::name(cfg.chat_template));
  opts.evaluate = evaluator(cfg, template_name);
  train::Trainer trainer(cfg, opts);
  *template_name = trainer.data().chat_template.name();
  trainer.fit();
  return 0;
}

}  // namespace

std::vector<Command> register_train(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "fine-tune a model on a run configuration's stage schedule");
  cmd->add_option("--config", T.path, "run configuration (YAML)")->required();
  add_set_option(cmd, T.sets);
  cmd->add_option("--output-dir", T.output_dir,
                  "where checkpoints, metrics and models go (overrides output_dir)");
  cmd->add_option_function<std::string>(
         "--resume", [](const std::string& v) { T.resume = kResumeValues.at(v); },
         "resume: 'auto' continues from the newest good checkpoint")
      ->check(CLI::IsMember(kResumeValues));
  cmd->add_option(
         "--resume-override", T.resume_overrides,
         "with --resume auto: a setting (e.g. train.lr) that may differ from the checkpoint's; repeatable, "
         "recorded in config.resolved.json")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_flag(
      "--overwrite", T.overwrite,
      "replace an earlier run's outputs in the output folder (checkpoints, final model, metrics); files "
      "sft did not write stay");
  cmd->add_option("--inject-nonfinite", T.inject_nonfinite,
                  "tests only: these global steps report a NaN loss")
      ->delimiter(',')
      ->group("");  // hidden from --help
  cmd->add_option(
      "--profile-steps", T.profile_steps,
      "A:B: record a trace of global steps A to B (LibTorch's profiler) into <output-dir>/profile/, "
      "for Perfetto or chrome://tracing");
  cmd->add_flag("--dry-run", T.dry,
                "print the stage plan and the memory per rank, then exit without training");
  cmd->add_flag("--json", T.json, "with --dry-run: print the plan as JSON");
  return {{cmd, run_train}};
}

}  // namespace sft::cli
