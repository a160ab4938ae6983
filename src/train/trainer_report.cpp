// What the trainer reports and writes besides checkpoints: the settings and plan at start,
// exported models, evaluations and the memory report (trainer.h).
#include "sft/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "sft/data/batch.h"
#include "sft/model/hf_checkpoint.h"
#include "sft/model/precision.h"
#include "sft/model/safetensors.h"
#include "sft/train/data_parallel.h"
#include "sft/train/dry_run.h"
#include "sft/train/memory_tracker.h"
#include "sft/train/progress.h"
#include "sft/train/rank_agreement.h"
#include "sft/train/run_log.h"
#include "sft/train/run_model.h"
#include "sft/train/run_folder.h"
#include "sft/train/stop_signal.h"
#include "sft/train/tfevents.h"
#include "sft/util/cuda.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"
#include "sft/util/log.h"

namespace sft::train {

void Trainer::log_settings() const {
  std::size_t width = 0;
  for (const auto& s : cfg_.settings) width = std::max(width, s.key.size());
  std::string table;
  for (const auto& s : cfg_.settings) {
    std::string v = s.value.size() > 60 ? s.value.substr(0, 57) + "..." : s.value;
    table += "\n  " + s.key + std::string(width + 2 - s.key.size(), ' ') + v +
             std::string(v.size() < 40 ? 40 - v.size() : 1, ' ') + "(" + s.source + ")";
  }
  sft::log::info("settings ({}):{}", cfg_.source_file, table);
}

void Trainer::log_plan() const {
  sft::log::info(
      "model: {}, {} parameters ({} layers, hidden {}, heads {}/{} kv, vocab {}), {} init, device {}, {} "
      "threads, "
      "precision {}{}; {} rank(s), {}",
      model_->config().model_type_name(), model_->num_parameters(), model_->config().num_hidden_layers,
      model_->config().hidden_size, model_->config().num_attention_heads,
      model_->config().num_key_value_heads, model_->config().vocab_size, config::name(cfg_.model.init),
      device_.str(), at::get_num_threads(), config::name(cfg_.train.precision),
      cfg_.train.activation_checkpointing ? ", activation checkpointing" : "", world_,
      config::name(cfg_.dist.strategy));
  for (std::size_t i = 0; i < cfg_.datasets.size(); ++i) {
    const auto& st = data_.datasets[i]->stats();
    sft::log::info(
        "data {}: {} records read, {} kept, {} bad (skipped), {} filtered, {} zero-target and {} too long "
        "(reported, not trained), {} truncated",
        cfg_.datasets[i].name, st.read, st.kept, st.bad, st.filtered, st.zero_target, st.too_long,
        st.truncated);
    for (const auto& b : st.first_bad) sft::log::warn("  bad record {}: {}", b.where, b.reason);
  }
  for (std::size_t s = 0; s < data_.streams.size(); ++s) {
    const auto& st = *data_.streams[s];
    const auto& spec = cfg_.stages[s];
    std::string sources;
    for (const auto& src : data_.plan.stages[s].sources)
      sources += (sources.empty() ? "" : ", ") + src.dataset_name() + (src.replay() ? " (replay) " : " ") +
                 std::to_string(src.records) + (src.repeat() > 1 ? " x" + std::to_string(src.repeat()) : "");
    sft::log::info(
        "stage {}/{} {}: {} | {} samples x {} epochs, {} tokens ({} trained), {} steps, lr {:g} {}, "
        "{} efficiency {:.1f}%",
        s + 1, data_.streams.size(), spec.name, sources, st.samples_per_epoch(), st.epochs(), st.tokens(),
        st.trained_tokens(), st.steps(), spec.lr, config::name(spec.schedule),
        config::name(cfg_.data.batching), 100.0 * st.packing_efficiency());
  }
}

void Trainer::run_eval(const std::string& model_dir, const std::string& label, int stage, std::int64_t step) {
  if (cfg_.eval.benchmarks.empty()) return;
  if (!opts_.evaluate) {
    if (rank_ == 0)
      sft::log::warn(
          "eval: the config asks for an evaluation but this trainer has no evaluator (run it with sft "
          "train)");
    return;
  }
  // Every rank generates its share of the batches; rank 0 scores and writes.
  // The ranks wait for each other between benchmarks while rank 0 scores (HumanEval runs
  // programs): an hour at least, rather than dist.timeout_s.
  const auto patience = std::chrono::seconds(std::max(cfg_.dist.timeout_s, 3600));
  EvalShare share{rank_, world_, device_,
                  [this, patience](const std::string& s) { return dist_->all_gather_strings(s, patience); }};
  meter_->begin();
  auto results = opts_.evaluate(model_dir, share);
  meter_->end("eval");
  if (rank_ != 0) return;
  const std::string dir = label == "final" ? fs::join(cfg_.output_dir, "eval")
                                           : fs::join(fs::join(cfg_.output_dir, "eval"), label);
  nlohmann::ordered_json summary = nlohmann::ordered_json::object();
  const std::string stage_name = stage >= 0 && stage < static_cast<int>(cfg_.stages.size())
                                     ? cfg_.stages[static_cast<std::size_t>(stage)].name
                                     : "";
  for (auto it = results.begin(); it != results.end(); ++it) {
    fs::write_file_atomic(fs::join(dir, it.key() + ".json"), it.value().dump(1) + "\n");
    const auto& s = it.value()["summary"];
    summary[it.key()] = s;
    log_->record({{"event", "eval"},
                  {"step", step},
                  {"stage", stage_name},
                  {"label", label},
                  {"benchmark", it.key()},
                  {"summary", nlohmann::json(s)}});
    if (s.contains("score") && s["score"].is_number()) {
      log_->scalar("eval/" + it.key(), s["score"].get<double>(), step);
      sft::log::info("eval {} {}: {} {:.4f}", label, it.key(), s.value("metric", std::string("score")),
                     s["score"].get<double>());
    }
  }
  fs::write_file_atomic(fs::join(dir, "summary.json"), summary.dump(1) + "\n");
}

void Trainer::export_model(const std::string& dir) {
  // Streamed: one parameter at a time goes to the file, so no rank ever holds a second
  // copy of the model. Under ZeRO-3 every rank takes part in gathering one unit at a time
  // (the peak extra memory is that unit) and rank 0 writes.
  meter_->begin();
  model::SaveOptions so;
  so.dtype = cfg_.model.save_dtype == config::SaveDtype::kBf16  ? c10::kBFloat16
             : cfg_.model.save_dtype == config::SaveDtype::kF16 ? c10::kHalf
                                                                : c10::kFloat;
  // The run's tokenizer files, with the run's template as the folder's Jinja chat template
  // (transformers renders it as sft does; template: auto finds it again).
  so.write_tokenizer = [this](const std::string& dir) {
    data_.tokenizer->write_hf_files(dir, data_.chat_template.jinja(),
                                    model_->config().max_position_embeddings);
  };
  const bool sharded = opt_->sharding().params;
  if (rank_ == 0) {
    std::size_t gathered = model_->num_units();  // the unit whose parameters `fetch` serves now
    std::vector<at::Tensor> unit;
    auto fetch = [&](std::size_t index) -> at::Tensor {
      if (!sharded) return model_->parameters()[index].tensor;
      const std::size_t u = opt_->layout().unit_of_param(index);
      if (u != gathered) {
        unit.clear();  // the last unit goes first, so that one unit is held at a time
        unit = dp_->gather_master(u);
        gathered = u;
      }
      const auto ids = model_->unit_params(u);
      return unit[static_cast<std::size_t>(std::find(ids.begin(), ids.end(), index) - ids.begin())];
    };
    model::save_hf_model(model_->config(), fetch, dir, so);
    sft::log::info("exported {}", dir);
  } else if (sharded) {
    for (std::size_t u = 0; u < model_->num_units(); ++u)
      dp_->gather_master(u);  // rank 0's gathers, in its order
  }
  meter_->end("export");
  dist_->barrier();
}

void Trainer::report_memory() {
  const std::string mine = nlohmann::json(meter_->peaks()).dump();
  const std::vector<std::string> all =
      dist_->distributed() ? dist_->all_gather_strings(mine) : std::vector<std::string>{mine};
  if (rank_ != 0) return;
  nlohmann::json ranks = nlohmann::json::array();
  for (const auto& r : all) ranks.push_back(nlohmann::json::parse(r));
  const nlohmann::ordered_json planned = plan_.phases_json();
  std::string table;
  for (auto it = planned.begin(); it != planned.end(); ++it) {
    std::string measured;
    for (const auto& r : ranks)
      if (r.contains(it.key()))
        measured += (measured.empty() ? "" : " / ") + format_bytes(r[it.key()].get<double>());
    table += "\n  " + it.key() + std::string(18 - std::min<std::size_t>(17, it.key().size()), ' ') +
             "planned " + format_bytes(it.value().get<double>()) + ", measured " +
             (measured.empty() ? "-" : measured);
  }
  sft::log::info("memory per rank by phase (tensor bytes above what was live before the model; {}):{}",
                 device_.is_cuda() ? "CUDA caching allocator, allocated" : "CPU tensors", table);
  log_->record({{"event", "memory"},
                {"unit", "bytes above what was live before the model"},
                {"planned", planned},
                {"measured", ranks}});
}

}  // namespace sft::train
