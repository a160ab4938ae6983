// What `sft data stats` reports: per dataset (records read, kept, bad with reasons,
// filtered) and per stage and source (selected records, trainable samples, zero-target,
// truncated and too-long samples, tokens, target tokens), with each stage's packing
// efficiency. Shared by the CLI and the trainer's start-up summary.
#pragma once

#include <nlohmann/json.hpp>

#include "sft/config/run_config.h"
#include "sft/data/stage_stream.h"
#include "sft/data/strategy.h"

namespace sft::data {

nlohmann::ordered_json data_stats(const config::RunConfig& cfg, const DataPlan& plan,
                                  const StageStream::Datasets& datasets,
                                  const std::vector<std::unique_ptr<StageStream>>& streams);

// The same as aligned text tables.
std::string format_data_stats(const nlohmann::ordered_json& stats);

}  // namespace sft::data
