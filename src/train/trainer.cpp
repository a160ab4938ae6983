#include "sft/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <torch/cuda.h>

#include <cmath>
#include <cstdlib>
#include <fstream>

#include "sft/data/batch.h"
#include "sft/model/hf_checkpoint.h"
#include "sft/model/precision.h"
#include "sft/train/loss.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft::train {
namespace {

using Clock = std::chrono::steady_clock;

std::string fmt_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  long t = static_cast<long>(s + 0.5);
  if (t >= 3600) return std::to_string(t / 3600) + "h" + std::to_string((t % 3600) / 60) + "m";
  if (t >= 60) return std::to_string(t / 60) + "m" + std::to_string(t % 60) + "s";
  return std::to_string(t) + "s";
}

void append_line(const std::string& path, const std::string& line) {
  std::ofstream f(path, std::ios::app);
  f << line << '\n';
}

}  // namespace

c10::Device setup_device(const config::TrainSpec& t) {
  int threads = t.threads;
  if (threads <= 0) {
    const char* env = std::getenv("OMP_NUM_THREADS");
    if (env && std::atoi(env) > 0) threads = std::atoi(env);
  }
  if (threads <= 0) {
    cpu_set_t set;
    threads = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  }
  at::set_num_threads(threads);
  if (t.device == "cpu") return c10::Device(c10::kCPU);
  if (t.device == "auto") return torch::cuda::is_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  if (!torch::cuda::is_available()) throw ConfigError("train.device: " + t.device + " requested but CUDA is not available");
  return c10::Device(t.device);
}

struct Trainer::StepStats {
  double loss = 0;  // mean per trained token
  double grad_norm = 0;
  std::int64_t tokens = 0, targets = 0;
  bool skipped = false;
};

Trainer::Trainer(config::RunConfig cfg, TrainerOptions opts)
    : cfg_(std::move(cfg)), opts_(opts), device_(setup_device(cfg_.train)) {
  fs::make_dirs(cfg_.output_dir);
  data_ = build_run_data(cfg_, world_);
  pad_id_ = data_.tokenizer->pad_id() >= 0 ? data_.tokenizer->pad_id() : 0;

  // ---- model -----------------------------------------------------------------------------
  nlohmann::json mc = nlohmann::json::object();
  if (!cfg_.model.path.empty()) mc = model::load_llama_config(cfg_.model.path).raw;
  if (cfg_.model.config.is_object())
    for (auto it = cfg_.model.config.begin(); it != cfg_.model.config.end(); ++it) mc[it.key()] = it.value();
  model::LlamaConfig lc = model::LlamaConfig::from_json(mc, cfg_.model.path.empty() ? "model.config" : cfg_.model.path);
  if (lc.vocab_size < data_.tokenizer->vocab_size())
    throw ConfigError("model.config.vocab_size: " + std::to_string(lc.vocab_size) + " is smaller than the tokenizer's " +
                      std::to_string(data_.tokenizer->vocab_size()) + " pieces (" + cfg_.tokenizer + ")");
  model_ = std::make_unique<model::Llama>(lc, device_, c10::kFloat);
  bool pretrained = cfg_.model.init == "pretrained" ||
                    (cfg_.model.init == "auto" && !cfg_.model.path.empty() && model::has_weights(cfg_.model.path));
  if (pretrained) model::load_weights(*model_, cfg_.model.path);
  else model_->init_weights(cfg_.seed);
  model_->set_activation_checkpointing(cfg_.train.activation_checkpointing);
  opt_ = std::make_unique<FlatAdamW>(*model_, AdamWOptions{cfg_.train.adam_beta1, cfg_.train.adam_beta2,
                                                           cfg_.train.adam_eps, cfg_.train.weight_decay});

  if (rank_ == 0) {
    nlohmann::json resolved = cfg_.to_json();
    nlohmann::json settings = nlohmann::json::array();
    for (const auto& s : cfg_.settings) settings.push_back({{"key", s.key}, {"value", s.value}, {"source", s.source}});
    fs::write_file_atomic(fs::join(cfg_.output_dir, "config.resolved.json"),
                          nlohmann::json{{"config", resolved}, {"settings", settings}}.dump(2) + "\n");
    fs::write_file_atomic(fs::join(cfg_.output_dir, "data_manifest.json"), data_manifest(cfg_, data_).dump() + "\n");
    log_plan();
  }
}

Trainer::~Trainer() = default;

void Trainer::log_plan() const {
  spdlog::info("model: {} parameters ({} layers, hidden {}, heads {}/{} kv, vocab {}), {} init, device {}, {} threads, "
               "precision {}",
               model_->num_parameters(), model_->config().num_hidden_layers, model_->config().hidden_size,
               model_->config().num_attention_heads, model_->config().num_key_value_heads,
               model_->config().vocab_size, cfg_.model.init, device_.str(), at::get_num_threads(),
               cfg_.train.precision);
  for (std::size_t i = 0; i < cfg_.datasets.size(); ++i) {
    const auto& st = data_.datasets[i]->stats();
    spdlog::info("data {}: {} records read, {} kept, {} bad (skipped), {} filtered, {} zero-target and {} too long "
                 "(reported, not trained), {} truncated",
                 cfg_.datasets[i].name, st.read, st.kept, st.bad, st.filtered, st.zero_target, st.too_long,
                 st.truncated);
    for (const auto& b : st.first_bad) spdlog::warn("  bad record {}: {}", b.where, b.reason);
  }
  for (std::size_t s = 0; s < data_.streams.size(); ++s) {
    const auto& st = *data_.streams[s];
    const auto& spec = cfg_.stages[s];
    std::string sources;
    for (const auto& src : data_.plan.stages[s].sources)
      sources += (sources.empty() ? "" : ", ") + src.dataset + (src.replay ? " (replay) " : " ") +
                 std::to_string(src.records);
    spdlog::info("stage {}/{} {}: {} | {} samples x {} epochs, {} tokens, {} steps, lr {:g} {}, packing {:.1f}%",
                 s + 1, data_.streams.size(), spec.name, sources, st.samples_per_epoch(), spec.epochs, st.tokens(),
                 st.steps(), spec.lr, spec.schedule, 100.0 * st.packing_efficiency());
  }
}

Trainer::StepStats Trainer::train_step(int stage, std::int64_t step) {
  const data::StageStream& stream = *data_.streams[static_cast<std::size_t>(stage)];
  StepStats st;
  const std::int64_t step_targets = stream.step_targets(step);
  const bool bf16 = cfg_.train.precision != "fp32";
  at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device_));

  opt_->zero_grad();
  for (std::int64_t m = 0; m < cfg_.train.grad_accum; ++m) {
    const data::MicroBatch* mb = stream.micro_batch(step, rank_, m);
    if (!mb) continue;
    data::Batch b = data::make_batch(*mb, data_.datasets, pad_id_);
    at::Tensor ids = b.input_ids.to(device_), pos = b.position_ids.to(device_), labels = b.labels.to(device_);
    at::Tensor mask = b.attn_mask.defined() ? b.attn_mask.to(device_) : at::Tensor();
    at::Tensor loss;
    {
      model::AutocastGuard autocast(device_, c10::kBFloat16, bf16);
      at::Tensor hidden = model_->forward_hidden(ids, pos, mask);
      loss = masked_cross_entropy_sum(*model_, hidden, labels);
    }
    if (step_targets > 0) (loss / static_cast<double>(step_targets)).backward();
    loss_sum += loss.detach();
    st.tokens += b.tokens;
    st.targets += b.targets;
  }
  st.loss = step_targets > 0 ? loss_sum.item<double>() / static_cast<double>(step_targets) : 0.0;
  st.grad_norm = opt_->clip_grad_norm(cfg_.train.max_grad_norm);
  if (!std::isfinite(st.loss) || !std::isfinite(st.grad_norm)) {
    st.skipped = true;
    opt_->zero_grad();
    return st;
  }
  const auto& spec = cfg_.stages[static_cast<std::size_t>(stage)];
  const std::int64_t total = stream.steps();
  const double lr = lr_at(spec.schedule, spec.lr, spec.min_lr_ratio,
                          warmup_steps(spec.warmup_ratio, spec.warmup_steps, total), total, step);
  opt_->step(lr);
  return st;
}

TrainResult Trainer::fit() {
  TrainResult result;
  const std::string metrics = fs::join(cfg_.output_dir, "metrics.jsonl");
  std::int64_t global_step = 0, consecutive_nonfinite = 0;
  const auto run_start = Clock::now();
  std::int64_t total_steps = 0;
  for (const auto& s : data_.streams) total_steps += s->steps();
  if (cfg_.train.max_steps > 0) total_steps = std::min(total_steps, cfg_.train.max_steps);

  for (std::size_t s = 0; s < data_.streams.size(); ++s) {
    const data::StageStream& stream = *data_.streams[s];
    const auto& spec = cfg_.stages[s];
    const std::int64_t steps = stream.steps();
    const std::int64_t warmup = warmup_steps(spec.warmup_ratio, spec.warmup_steps, steps);
    if (s > 0 && cfg_.train.reset_optimizer_between_stages) opt_->reset_state();
    double first_loss = NAN, last_loss = NAN, window_loss = 0;
    std::int64_t window_targets = 0, window_tokens = 0;
    auto window_start = Clock::now();

    for (std::int64_t step = 0; step < steps; ++step) {
      if (cfg_.train.max_steps > 0 && global_step >= cfg_.train.max_steps) break;

      // ---- the step ------------------------------------------------------------------------
      StepStats st = train_step(static_cast<int>(s), step);
      ++global_step;

      // ---- diagnostics only below this line ---------------------------------------------------
      if (st.skipped) {
        if (++consecutive_nonfinite >= cfg_.train.max_nonfinite_steps)
          throw Error("training diverged: " + std::to_string(consecutive_nonfinite) +
                      " consecutive steps with a non-finite loss or gradient norm (stage " + spec.name + ", step " +
                      std::to_string(step + 1) + "); lower train.lr or check the data");
        spdlog::warn("stage {} step {}: non-finite loss {} or grad norm {}; step skipped ({} in a row)", spec.name,
                     step + 1, st.loss, st.grad_norm, consecutive_nonfinite);
        continue;
      }
      consecutive_nonfinite = 0;
      if (std::isnan(first_loss)) first_loss = st.loss;
      last_loss = st.loss;
      window_loss += st.loss * static_cast<double>(st.targets);
      window_targets += st.targets;
      window_tokens += st.tokens;
      const bool log_now = (step + 1) % cfg_.train.log_every == 0 || step == 0 || step + 1 == steps;
      if (log_now && rank_ == 0) {
        double secs = std::chrono::duration<double>(Clock::now() - window_start).count();
        double tps = secs > 0 ? static_cast<double>(window_tokens) / secs : 0.0;
        double elapsed = std::chrono::duration<double>(Clock::now() - run_start).count();
        double eta = global_step > 0 ? elapsed / static_cast<double>(global_step) *
                                           static_cast<double>(total_steps - global_step)
                                     : NAN;
        double mean_loss = window_targets ? window_loss / static_cast<double>(window_targets) : st.loss;
        double lr = lr_at(spec.schedule, spec.lr, spec.min_lr_ratio, warmup, steps, step);
        spdlog::info("stage {}/{} {} | step {}/{} | loss {:.4f} | lr {:.2e} | grad {:.3f} | {:.0f} tok/s | ETA {}",
                     s + 1, data_.streams.size(), spec.name, step + 1, steps, mean_loss, lr, st.grad_norm, tps,
                     fmt_duration(eta));
        nlohmann::json rec = {{"event", "step"}, {"step", global_step}, {"stage", spec.name},
                              {"stage_index", s}, {"stage_step", step + 1}, {"epoch", stream.epoch_at(step)},
                              {"loss", mean_loss}, {"lr", lr}, {"grad_norm", st.grad_norm},
                              {"tokens_per_s", tps}, {"elapsed_s", elapsed}};
        append_line(metrics, rec.dump());
        window_loss = 0;
        window_targets = window_tokens = 0;
        window_start = Clock::now();
      }
    }
    result.stage_first_loss.push_back(first_loss);
    result.stage_last_loss.push_back(last_loss);
    if (rank_ == 0) {
      spdlog::info("stage {}/{} {} done: loss {:.4f} -> {:.4f}", s + 1, data_.streams.size(), spec.name, first_loss,
                   last_loss);
      append_line(metrics, nlohmann::json{{"event", "stage_end"}, {"stage", spec.name}, {"stage_index", s},
                                          {"step", global_step}, {"first_loss", first_loss}, {"last_loss", last_loss}}
                               .dump());
      if (cfg_.train.export_stage_models && s + 1 < data_.streams.size())
        export_model(fs::join(cfg_.output_dir, "stage" + std::to_string(s + 1) + "_" + spec.name));
    }
    if (cfg_.train.max_steps > 0 && global_step >= cfg_.train.max_steps) break;
  }
  result.steps = global_step;
  result.final_dir = fs::join(cfg_.output_dir, "final");
  if (rank_ == 0) {
    export_model(result.final_dir);
    spdlog::info("done: {} steps in {}; model saved to {}", global_step,
                 fmt_duration(std::chrono::duration<double>(Clock::now() - run_start).count()), result.final_dir);
  }
  return result;
}

void Trainer::export_model(const std::string& dir) {
  model::SaveOptions so;
  so.dtype = cfg_.model.save_dtype == "bf16" ? c10::kBFloat16 : cfg_.model.save_dtype == "f16" ? c10::kHalf : c10::kFloat;
  so.tokenizer_model = cfg_.tokenizer;
  model::save_hf_model(*model_, dir, so);
  spdlog::info("exported {}", dir);
}

}  // namespace sft::train
