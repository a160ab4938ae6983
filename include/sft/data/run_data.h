// RunData: everything a run's data side resolves to before training: the tokenizer, each
// dataset's tokenized cache, the record selection of every stage and its micro-batch stream.
// Shared by `sft train`, `sft data stats|inspect|prepare` and the dry-run planner.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sft/config/run_config.h"
#include "sft/data/stage_stream.h"
#include "sft/data/strategy.h"
#include "sft/data/tokenized_dataset.h"
#include "sft/data/tokenizer.h"

namespace sft::data {

struct RunData {
  std::shared_ptr<const Tokenizer> tokenizer;
  // The run's template (template: auto resolved) with the run's system message: the one
  // exported models carry as their Jinja chat template.
  ChatTemplate chat_template = ChatTemplate::create(config::Template::kVicunaV11);
  StageStream::Datasets datasets;  // aligned with cfg.datasets
  DataPlan plan;
  std::vector<std::unique_ptr<StageStream>> streams;  // one per stage
  std::vector<bool> rebuilt;                          // cache rebuilt per dataset
};

// Loads/prepares every dataset and plans every stage for `world_size` ranks.
RunData build_run_data(const config::RunConfig& cfg, int world_size);

// Micro-batches each rank accumulates per optimizer step in rows mode: train.grad_accum,
// or rows_per_step / (batch_size x world_size) when the config states the global batch in
// rows (ConfigError when the world size does not divide it).
std::int64_t rows_accumulation(const config::RunConfig& cfg, int world_size);
// How the global batch is made up on this world size, for the log and the dry run.
std::string describe_global_batch(const config::RunConfig& cfg, int world_size);

// Record counts without tokenizing (for `sft config expand`); uses `size:` when a file is
// absent, flagging the count as an estimate.
DataPlan plan_without_tokenizing(const config::RunConfig& cfg);

// The resolved run as `sft config expand` prints it.
nlohmann::json expand_json(const config::RunConfig& cfg, const DataPlan& plan);

// Per stage and source: the record ids trained on (the run's data manifest).
nlohmann::json data_manifest(const config::RunConfig& cfg, const RunData& rd);

}  // namespace sft::data
