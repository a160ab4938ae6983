// `sft train --dry-run`: what a run would do and need, without training. Prints the stage
// plan (samples, tokens, steps per stage; exact when the data files are present, else
// estimated from the datasets' `size:`) and the memory per rank (weights, gradients,
// optimizer state, activations with and without checkpointing) for the config's model on
// its device count, under every distributed strategy, plus LLaMA 7B/13B/33B/65B for scale.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "sft/config/run_config.h"
#include "sft/model/llama_config.h"
#include "sft/train/memory_plan.h"
#include "sft/train/run_model.h"

namespace sft::data {
struct RunData;
}

namespace sft::train {

// The planner's input for a run: the model built on the meta device (its flat layout for
// `world` ranks), the largest micro-batch of the steps the run takes (exact with `data`,
// else rows x max_seq_len), the strategy, precision, device and evaluation. Used by the
// dry run and by the trainer, which reports each phase's measured peak next to it.
MemoryPlanInput memory_plan_input(const config::RunConfig& cfg, const RunModel& model,
                                  const data::RunData* data, int world);

nlohmann::ordered_json dry_run(const config::RunConfig& cfg, int world_size);
std::string format_dry_run(const nlohmann::ordered_json& plan);

}  // namespace sft::train
