// Trainer: runs a resolved RunConfig's stages, one after another, on one device.
//
// Owns the model, the flat AdamW state and the run's data (streams planned up front).
// Rank 0 logs, writes metrics and exports models. A stage's end exports an HF folder
// (<output_dir>/stage<N>_<name>) and the run's end exports <output_dir>/final.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <c10/core/Device.h>

#include "sft/config/run_config.h"
#include "sft/model/llama.h"
#include "sft/train/optimizer.h"
#include "sft/train/run_data.h"

namespace sft::train {

struct TrainerOptions {
  bool resume = false;  // --resume auto
};

struct TrainResult {
  std::int64_t steps = 0;
  std::vector<double> stage_first_loss, stage_last_loss;
  std::string final_dir;
};

class Trainer {
 public:
  Trainer(config::RunConfig cfg, TrainerOptions opts);
  ~Trainer();
  TrainResult fit();

  const model::Llama& model() const { return *model_; }

 private:
  struct StepStats;
  StepStats train_step(int stage, std::int64_t step);
  void export_model(const std::string& dir);
  void log_plan() const;

  config::RunConfig cfg_;
  TrainerOptions opts_;
  c10::Device device_;
  int rank_ = 0, world_ = 1;
  RunData data_;
  std::unique_ptr<model::Llama> model_;
  std::unique_ptr<FlatAdamW> opt_;
  std::int32_t pad_id_ = 0;
};

// Resolves train.device ("auto" -> cuda when available) and train.threads; sets LibTorch's
// intra-op thread count. Returns the device.
c10::Device setup_device(const config::TrainSpec& t);

}  // namespace sft::train
