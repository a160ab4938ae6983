// The run's model: config.json merged with model.config, and where its weights come from.
#include "sft/train/run_model.h"

#include "sft/model/hf_checkpoint.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft::train {

RunModel resolve_run_model(const config::RunConfig& cfg, bool planning) {
  RunModel m;
  m.config_json = nlohmann::json::object();
  std::string where = "model.config";
  if (!cfg.model.path.empty() && (!planning || fs::exists(fs::join(cfg.model.path, "config.json")))) {
    m.config_json = model::load_llama_config(cfg.model.path).raw;
    where = cfg.model.path;
  }
  if (cfg.model.config.is_object())
    for (auto it = cfg.model.config.begin(); it != cfg.model.config.end(); ++it)
      m.config_json[it.key()] = it.value();
  if (planning && m.config_json.empty())
    throw ConfigError("model: " + cfg.model.path +
                      "/config.json is absent and model.config is empty; "
                      "the planner needs the model's config.json fields");
  m.config = model::LlamaConfig::from_json(m.config_json, where);
  m.pretrained = cfg.model.init == config::ModelInit::kPretrained ||
                 (cfg.model.init == config::ModelInit::kAuto && !cfg.model.path.empty() &&
                  model::has_weights(cfg.model.path));
  return m;
}

void check_vocab_covers(const RunModel& rm, std::int64_t tokenizer_vocab, const config::RunConfig& cfg) {
  if (rm.config.vocab_size < tokenizer_vocab)
    throw ConfigError("model.config.vocab_size: " + std::to_string(rm.config.vocab_size) +
                      " is smaller than the tokenizer's " + std::to_string(tokenizer_vocab) + " pieces (" +
                      cfg.tokenizer + ")");
}

}  // namespace sft::train
