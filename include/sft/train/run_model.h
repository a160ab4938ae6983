// The model a run config names: model.path's config.json with model.config's fields over
// it (model.config wins), and whether its weights come from model.path. The trainer builds
// this model and the dry run plans it, from this one resolution.
#pragma once

#include <nlohmann/json.hpp>

#include "sft/config/run_config.h"
#include "sft/model/llama_config.h"

namespace sft::train {

struct RunModel {
  nlohmann::json config_json;  // the merged config.json fields, as checkpoints record them
  model::LlamaConfig config;
  // model.init pretrained, or auto with weights in model.path; otherwise a seeded random init.
  bool pretrained = false;
};

// Throws ConfigError for an unreadable or invalid config. `planning` (the dry run, which
// may plan without the files): a model.path without config.json contributes nothing.
RunModel resolve_run_model(const config::RunConfig& cfg, bool planning = false);

// Throws ConfigError naming model.config.vocab_size when the model has fewer embedding rows
// than the tokenizer has ids (training would index past them). The trainer and the dry run ask.
void check_vocab_covers(const RunModel& rm, std::int64_t tokenizer_vocab, const config::RunConfig& cfg);

}  // namespace sft::train
