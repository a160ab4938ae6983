#include "sft/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "sft/data/batch.h"
#include "sft/model/hf_checkpoint.h"
#include "sft/model/precision.h"
#include "sft/model/safetensors.h"
#include "sft/train/loss.h"
#include "sft/train/memory_tracker.h"
#include "sft/train/progress.h"
#include "sft/train/stop_signal.h"
#include "sft/train/tfevents.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"

namespace sft::train {
namespace {

using Clock = std::chrono::steady_clock;

void append_line(const std::string& path, const std::string& line) {
  std::ofstream f(path, std::ios::app);
  f << line << '\n';
}

// Drops metrics lines past `global_step` (written after the checkpoint a run resumes from).
void truncate_metrics(const std::string& path, std::int64_t global_step) {
  if (!fs::exists(path)) return;
  std::istringstream in(fs::read_file(path));
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.value("step", std::int64_t(0)) > global_step) continue;
    } catch (...) {
      continue;  // a torn last line
    }
    kept += line + "\n";
  }
  fs::write_file_atomic(path, kept);
}

std::string hex(const at::Tensor& bytes) {
  static const char* k = "0123456789abcdef";
  at::Tensor b = bytes.contiguous();
  const auto* p = b.data_ptr<std::uint8_t>();
  std::string s;
  for (std::int64_t i = 0; i < b.numel(); ++i) {
    s.push_back(k[p[i] >> 4]);
    s.push_back(k[p[i] & 15]);
  }
  return s;
}

at::Tensor unhex(const std::string& s) {
  at::Tensor t = at::empty({static_cast<std::int64_t>(s.size() / 2)}, at::kByte);
  auto* p = t.data_ptr<std::uint8_t>();
  for (std::size_t i = 0; i + 1 < s.size(); i += 2) p[i / 2] = static_cast<std::uint8_t>(std::stoi(s.substr(i, 2), nullptr, 16));
  return t;
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
    : cfg_(std::move(cfg)), opts_(std::move(opts)), device_(setup_device(cfg_.train)) {
  if (device_.is_cpu()) CpuMemoryTracker::install();
  StopSignal::install();
  if (const char* inject = std::getenv("SFT_INJECT_NONFINITE")) {
    std::stringstream ss(inject);
    std::string item;
    while (std::getline(ss, item, ',')) inject_nonfinite_.push_back(std::stoll(item));
  }
  fs::make_dirs(cfg_.output_dir);
  checkpoints_ = std::make_unique<CheckpointStore>(fs::join(cfg_.output_dir, "checkpoints"));
  if (!opts_.resume && !checkpoints_->list().empty())
    throw ConfigError(cfg_.output_dir + ": holds checkpoints of an earlier run; continue it with --resume auto, "
                      "or choose another --output-dir");

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
  const bool pretrained = cfg_.model.init == "pretrained" ||
                          (cfg_.model.init == "auto" && !cfg_.model.path.empty() && model::has_weights(cfg_.model.path));
  if (pretrained) model::check_weights(lc, cfg_.model.path);
  // bf16-pure keeps bf16 weights (no fp32 master copy); otherwise fp32 master weights.
  model_ = std::make_unique<model::Llama>(lc, device_, cfg_.train.precision == "bf16-pure" ? c10::kBFloat16 : c10::kFloat);
  if (pretrained) model::load_weights(*model_, cfg_.model.path);
  else model_->init_weights(cfg_.seed);
  model_->set_activation_checkpointing(cfg_.train.activation_checkpointing);
  opt_ = std::make_unique<FlatAdamW>(*model_, AdamWOptions{cfg_.train.adam_beta1, cfg_.train.adam_beta2,
                                                           cfg_.train.adam_eps, cfg_.train.weight_decay});

  if (rank_ == 0) {
    nlohmann::json settings = nlohmann::json::array();
    for (const auto& s : cfg_.settings) settings.push_back({{"key", s.key}, {"value", s.value}, {"source", s.source}});
    fs::write_file_atomic(fs::join(cfg_.output_dir, "config.resolved.json"),
                          nlohmann::json{{"config", cfg_.to_json()}, {"settings", settings}}.dump(2) + "\n");
    fs::write_file_atomic(fs::join(cfg_.output_dir, "data_manifest.json"), data_manifest(cfg_, data_).dump() + "\n");
    tb_ = std::make_unique<TfEventsWriter>(fs::join(cfg_.output_dir, "tensorboard"));
    log_settings();
    log_plan();
  }
}

Trainer::~Trainer() = default;

void Trainer::log_settings() const {
  std::size_t width = 0;
  for (const auto& s : cfg_.settings) width = std::max(width, s.key.size());
  std::string table;
  for (const auto& s : cfg_.settings) {
    std::string v = s.value.size() > 60 ? s.value.substr(0, 57) + "..." : s.value;
    table += "\n  " + s.key + std::string(width + 2 - s.key.size(), ' ') + v + std::string(v.size() < 40 ? 40 - v.size() : 1, ' ') +
             "(" + s.source + ")";
  }
  spdlog::info("settings ({}):{}", cfg_.source_file, table);
}

void Trainer::log_plan() const {
  spdlog::info("model: {} parameters ({} layers, hidden {}, heads {}/{} kv, vocab {}), {} init, device {}, {} threads, "
               "precision {}{}",
               model_->num_parameters(), model_->config().num_hidden_layers, model_->config().hidden_size,
               model_->config().num_attention_heads, model_->config().num_key_value_heads,
               model_->config().vocab_size, cfg_.model.init, device_.str(), at::get_num_threads(),
               cfg_.train.precision, cfg_.train.activation_checkpointing ? ", activation checkpointing" : "");
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
    spdlog::info("stage {}/{} {}: {} | {} samples x {} epochs, {} tokens ({} trained), {} steps, lr {:g} {}, "
                 "{} efficiency {:.1f}%",
                 s + 1, data_.streams.size(), spec.name, sources, st.samples_per_epoch(), spec.epochs, st.tokens(),
                 st.targets(), st.steps(), spec.lr, spec.schedule, cfg_.data.batching, 100.0 * st.packing_efficiency());
  }
}

double Trainer::stage_lr(int stage, std::int64_t step) const {
  const auto& spec = cfg_.stages[static_cast<std::size_t>(stage)];
  const std::int64_t total = data_.streams[static_cast<std::size_t>(stage)]->steps();
  return lr_at(spec.schedule, spec.lr, spec.min_lr_ratio, warmup_steps(spec.warmup_ratio, spec.warmup_steps, total),
               total, step);
}

// ---- checkpoints ---------------------------------------------------------------------------

void Trainer::save_checkpoint(const Position& next) {
  nlohmann::json fingerprints = nlohmann::json::array();
  for (const auto& s : data_.streams) fingerprints.push_back(s->fingerprint());
  at::Tensor rng = at::detail::getDefaultCPUGenerator().get_state();
  nlohmann::json state = {{"global_step", next.global_step},
                          {"stage", next.stage},
                          {"stage_step", next.step},
                          {"optimizer_steps", opt_->step_count()},
                          {"consecutive_nonfinite", consecutive_nonfinite_},
                          {"skipped_steps", skipped_total_},
                          {"stream_fingerprints", fingerprints},
                          {"world_size", world_},
                          {"dist_strategy", cfg_.dist.strategy},
                          {"rng_cpu", hex(rng)},
                          {"sft_version", SFT_VERSION},
                          {"config", cfg_.to_json()}};
  std::map<std::string, std::vector<std::pair<std::string, at::Tensor>>> files;
  files["state.safetensors"] = {{"params", opt_->params()}, {"exp_avg", opt_->exp_avg()}, {"exp_avg_sq", opt_->exp_avg_sq()}};
  std::string dir = checkpoints_->save(next.global_step, files, state);
  checkpoints_->prune(cfg_.train.keep_checkpoints);
  if (next.stage >= static_cast<int>(data_.streams.size())) spdlog::info("checkpoint {} (end of training)", dir);
  else spdlog::info("checkpoint {} (stage {}, step {} of it)", dir, next.stage + 1, next.step);
}

Trainer::Position Trainer::restore() {
  Position p;
  if (!opts_.resume) return p;
  auto latest = checkpoints_->latest_good();
  if (!latest) {
    spdlog::info("resume: no checkpoint in {}; starting from the beginning", checkpoints_->root());
    return p;
  }
  nlohmann::json st = read_trainer_state(latest->dir);
  if (st.value("world_size", 1) != world_)
    throw CheckpointError(latest->dir + ": written by " + std::to_string(st.value("world_size", 1)) +
                          " ranks, resumed on " + std::to_string(world_) + "; resume on the same world size");
  const auto& fps = st.at("stream_fingerprints");
  if (fps.size() != data_.streams.size())
    throw CheckpointError(latest->dir + ": the run had " + std::to_string(fps.size()) + " stages, the config now has " +
                          std::to_string(data_.streams.size()));
  for (std::size_t s = 0; s < data_.streams.size(); ++s)
    if (fps[s] != data_.streams[s]->fingerprint())
      throw CheckpointError(latest->dir + ": stage " + std::to_string(s + 1) +
                            "'s data stream differs from the checkpoint's (the config, data or seed changed); "
                            "resume with the same config, or start a new --output-dir");
  auto file = model::SafetensorsFile::open(fs::join(latest->dir, "state.safetensors"));
  at::NoGradGuard ng;
  for (auto [name, dst] : {std::pair<const char*, at::Tensor*>{"params", &opt_->params()},
                           {"exp_avg", &opt_->exp_avg()},
                           {"exp_avg_sq", &opt_->exp_avg_sq()}}) {
    at::Tensor src = file->tensor(name);
    if (src.numel() != dst->numel())
      throw CheckpointError(latest->dir + ": " + name + " has " + std::to_string(src.numel()) +
                            " elements, the model needs " + std::to_string(dst->numel()));
    dst->copy_(src);
  }
  opt_->set_step_count(st.at("optimizer_steps"));
  consecutive_nonfinite_ = st.value("consecutive_nonfinite", std::int64_t(0));
  skipped_total_ = st.value("skipped_steps", std::int64_t(0));
  {
    at::Generator g = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(g.mutex());
    g.set_state(unhex(st.at("rng_cpu")));
  }
  p.stage = st.at("stage");
  p.step = st.at("stage_step");
  p.global_step = st.at("global_step");
  if (rank_ == 0) truncate_metrics(fs::join(cfg_.output_dir, "metrics.jsonl"), p.global_step);
  spdlog::info("resumed from {}: stage {}, step {} of it, {} steps done", latest->dir, p.stage + 1, p.step, p.global_step);
  return p;
}

// ---- the step ----------------------------------------------------------------------------------

Trainer::StepStats Trainer::train_step(int stage, std::int64_t step, std::int64_t global_step) {
  const data::StageStream& stream = *data_.streams[static_cast<std::size_t>(stage)];
  StepStats st;
  const std::int64_t step_targets = stream.step_targets(step);
  const bool bf16 = cfg_.train.precision != "fp32";
  at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device_));

  opt_->zero_grad();
  for (std::int64_t m = 0; m < cfg_.train.grad_accum; ++m) {
    const data::MicroBatch* mb = stream.micro_batch(step, rank_, m);
    if (!mb) continue;  // the stage's last step can be short
    data::Batch b = data::make_batch(*mb, data_.datasets, pad_id_);
    at::Tensor ids = b.input_ids.to(device_), pos = b.position_ids.to(device_), labels = b.labels.to(device_);
    at::Tensor mask = b.attn_mask.defined() ? b.attn_mask.to(device_) : at::Tensor();
    at::Tensor loss;
    {
      model::AutocastGuard autocast(device_, c10::kBFloat16, bf16);
      at::Tensor hidden = model_->forward_hidden(ids, pos, mask);
      loss = masked_cross_entropy_sum(*model_, hidden, labels);
    }
    // Normalised by the trained tokens of the whole optimizer step, so any split of the
    // step into micro-batches (or ranks) yields the same gradient.
    if (step_targets > 0) (loss / static_cast<double>(step_targets)).backward();
    loss_sum += loss.detach();
    st.tokens += b.tokens;
    st.targets += b.targets;
  }
  st.loss = step_targets > 0 ? loss_sum.item<double>() / static_cast<double>(step_targets) : 0.0;
  if (std::find(inject_nonfinite_.begin(), inject_nonfinite_.end(), global_step) != inject_nonfinite_.end()) st.loss = NAN;
  st.grad_norm = opt_->clip_grad_norm(cfg_.train.max_grad_norm);
  if (!std::isfinite(st.loss) || !std::isfinite(st.grad_norm)) {
    st.skipped = true;
    opt_->zero_grad();
    return st;
  }
  opt_->step(stage_lr(stage, step));
  return st;
}

// ---- the loop --------------------------------------------------------------------------------

TrainResult Trainer::fit() {
  TrainResult result;
  const std::string metrics = fs::join(cfg_.output_dir, "metrics.jsonl");
  Position pos = restore();
  const auto run_start = Clock::now();
  const std::int64_t start_global = pos.global_step;
  std::int64_t total_steps = 0;
  for (const auto& s : data_.streams) total_steps += s->steps();
  if (cfg_.train.max_steps > 0) total_steps = std::min(total_steps, cfg_.train.max_steps);
  Progress progress(rank_ == 0, total_steps);
  if (device_.is_cpu()) CpuMemoryTracker::reset_peak();

  for (int s = pos.stage; s < static_cast<int>(data_.streams.size()); ++s) {
    const data::StageStream& stream = *data_.streams[static_cast<std::size_t>(s)];
    const auto& spec = cfg_.stages[static_cast<std::size_t>(s)];
    const std::int64_t steps = stream.steps();
    const std::int64_t first = s == pos.stage ? pos.step : 0;
    // Each stage starts a fresh optimizer, as the paper trains each stage as its own run.
    if (first == 0 && s > 0 && cfg_.train.reset_optimizer_between_stages) opt_->reset_state();
    double first_loss = NAN, last_loss = NAN, window_loss = 0;
    std::int64_t window_targets = 0, window_tokens = 0;
    auto window_start = Clock::now();
    bool limit_hit = false;

    for (std::int64_t step = first; step < steps; ++step) {
      if (cfg_.train.max_steps > 0 && pos.global_step >= cfg_.train.max_steps) {
        limit_hit = true;
        break;
      }

      // ---- the step ------------------------------------------------------------------------
      StepStats st = train_step(s, step, pos.global_step + 1);
      pos = {s, step + 1, pos.global_step + 1};

      // ---- once in a while ---------------------------------------------------------------------
      const bool stage_end = step + 1 == steps;
      if (!stage_end && cfg_.train.save_every > 0 && pos.global_step % cfg_.train.save_every == 0) save_checkpoint(pos);
      if (StopSignal::requested()) {
        save_checkpoint(pos);
        std::string how = "sft train --config " + (opts_.config_path.empty() ? cfg_.source_file : opts_.config_path) +
                          " --output-dir " + cfg_.output_dir + " --resume auto";
        throw StoppedBySignal("stopped by signal " + std::to_string(StopSignal::signal_number()) + " after step " +
                                  std::to_string(pos.global_step) + "; checkpoint saved. Resume with: " + how,
                              StopSignal::signal_number());
      }

      // ---- diagnostics only below this line -----------------------------------------------------
      if (st.skipped) {
        ++skipped_total_;
        if (++consecutive_nonfinite_ >= cfg_.train.max_nonfinite_steps)
          throw Error("training diverged: " + std::to_string(consecutive_nonfinite_) +
                      " consecutive steps with a non-finite loss or gradient norm (stage " + spec.name + ", step " +
                      std::to_string(step + 1) + "); lower train.lr or check the data");
        spdlog::warn("stage {} step {}: non-finite loss {} or grad norm {}; step skipped ({} in a row)", spec.name,
                     step + 1, st.loss, st.grad_norm, consecutive_nonfinite_);
        continue;
      }
      consecutive_nonfinite_ = 0;
      if (std::isnan(first_loss)) first_loss = st.loss;
      last_loss = st.loss;
      window_loss += st.loss * static_cast<double>(st.targets);
      window_targets += st.targets;
      window_tokens += st.tokens;
      const double elapsed = std::chrono::duration<double>(Clock::now() - run_start).count();
      const double eta = elapsed / static_cast<double>(std::max<std::int64_t>(1, pos.global_step - start_global)) *
                         static_cast<double>(total_steps - pos.global_step);
      const double lr = stage_lr(s, step);
      progress.update({s, static_cast<int>(data_.streams.size()), spec.name, step + 1, steps, pos.global_step, st.loss,
                       lr, st.grad_norm, eta});
      if ((step + 1) % cfg_.train.log_every == 0 || step == first || stage_end) {
        double secs = std::chrono::duration<double>(Clock::now() - window_start).count();
        double tps = secs > 0 ? static_cast<double>(window_tokens) / secs : 0.0;
        double mean_loss = window_targets ? window_loss / static_cast<double>(window_targets) : st.loss;
        progress.log_line({s, static_cast<int>(data_.streams.size()), spec.name, step + 1, steps, pos.global_step,
                           mean_loss, lr, st.grad_norm, eta},
                          tps);
        if (rank_ == 0) {
          nlohmann::json rec = {{"event", "step"}, {"step", pos.global_step}, {"stage", spec.name},
                                {"stage_index", s}, {"stage_step", step + 1}, {"epoch", stream.epoch_at(step)},
                                {"loss", mean_loss}, {"lr", lr}, {"grad_norm", st.grad_norm},
                                {"tokens_per_s", tps}, {"elapsed_s", elapsed}};
          append_line(metrics, rec.dump());
          const double wall = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
          tb_->scalar("train/loss", mean_loss, pos.global_step, wall);
          tb_->scalar("train/lr", lr, pos.global_step, wall);
          tb_->scalar("train/grad_norm", st.grad_norm, pos.global_step, wall);
          tb_->scalar("train/tokens_per_s", tps, pos.global_step, wall);
          tb_->flush();
        }
        window_loss = 0;
        window_targets = window_tokens = 0;
        window_start = Clock::now();
      }
    }
    if (limit_hit) break;

    // ---- stage end: export, checkpoint the position of the next stage ------------------------------
    progress.finish_stage();
    result.stage_first_loss.push_back(first_loss);
    result.stage_last_loss.push_back(last_loss);
    if (rank_ == 0) {
      if (first < steps)
        spdlog::info("stage {}/{} {} done: loss {:.4f} -> {:.4f}", s + 1, data_.streams.size(), spec.name, first_loss,
                     last_loss);
      append_line(metrics, nlohmann::json{{"event", "stage_end"}, {"stage", spec.name}, {"stage_index", s},
                                          {"step", pos.global_step}, {"first_loss", first_loss},
                                          {"last_loss", last_loss}}
                               .dump());
      if (cfg_.train.export_stage_models && s + 1 < static_cast<int>(data_.streams.size()))
        export_model(fs::join(cfg_.output_dir, "stage" + std::to_string(s + 1) + "_" + spec.name));
    }
    if (first < steps || s + 1 == static_cast<int>(data_.streams.size())) {
      pos = {s + 1, 0, pos.global_step};
      save_checkpoint(pos);
    }
  }
  result.steps = pos.global_step;
  result.skipped_steps = skipped_total_;
  if (device_.is_cpu()) result.peak_memory_bytes = CpuMemoryTracker::peak_bytes();
  result.final_dir = fs::join(cfg_.output_dir, "final");
  if (rank_ == 0) {
    export_model(result.final_dir);
    append_line(metrics, nlohmann::json{{"event", "end"}, {"step", pos.global_step}, {"skipped_steps", skipped_total_},
                                        {"peak_memory_mb", static_cast<double>(result.peak_memory_bytes) / 1048576.0}}
                             .dump());
    spdlog::info("done: {} steps ({} skipped) in {}; model saved to {}", pos.global_step, skipped_total_,
                 Progress::format_duration(std::chrono::duration<double>(Clock::now() - run_start).count()),
                 result.final_dir);
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
