// `sft train --dry-run`: what a run would do and need, without training. Prints the stage
// plan (samples, tokens, steps per stage; exact when the data files are present, else
// estimated from the datasets' `size:`) and the memory per rank (weights, gradients,
// optimizer state, activations with and without checkpointing) for the config's model on
// its device count, under every distributed strategy, plus LLaMA 7B/13B/33B/65B for scale.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "sft/config/run_config.h"

namespace sft::train {

nlohmann::ordered_json dry_run(const config::RunConfig& cfg, int world_size);
std::string format_dry_run(const nlohmann::ordered_json& plan);

}  // namespace sft::train
