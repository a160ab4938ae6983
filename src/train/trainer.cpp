// The trainer: building the run (device, ranks, data, model, optimizer), the loop and the
// step (trainer.h). Checkpoints are in trainer_checkpoint.cpp, reports in trainer_report.cpp.
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
#include "sft/train/device_rule.h"
#include "sft/train/dry_run.h"
#include "sft/train/memory_tracker.h"
#include "sft/train/progress.h"
#include "sft/train/rank_agreement.h"
#include "sft/train/run_log.h"
#include "sft/train/run_model.h"
#include "sft/train/run_folder.h"
#include "train/run_outputs.h"
#include "sft/train/stop_signal.h"
#include "sft/train/tfevents.h"
#include "sft/train/trace.h"
#include "sft/util/cuda.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"
#include "sft/util/log.h"
#include "sft/util/safe_io.h"

namespace sft::train {
namespace {}  // namespace

c10::Device setup_device(const config::TrainSpec& t, const dist::LaunchInfo& launch) {
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
  DeviceView view;
  view.cuda_compiled = cuda::compiled();
  view.gpus = cuda::device_count();
  if (view.cuda_compiled && view.gpus == 0) {
    view.driver_found = cuda::driver_found();
    view.no_gpu_reason = cuda::unavailable_reason();
  }
  view.local_rank = launch.local_rank;
  view.local_world = launch.local_world;
  view.launcher = launch.launcher;
  const DeviceDecision d = choose_device(t.device, view);
  if (!d.warning.empty()) sft::log::warn("{}", d.warning);
  if (d.device.is_cuda())
    cuda::set_device(d.device.index());  // the caching allocator and NCCL use the current device
  return d.device;
}

Trainer::Trainer(config::RunConfig cfg, TrainerOptions opts)
    : cfg_(std::move(cfg)), opts_(std::move(opts)), device_(c10::kCPU) {
  join_ranks();
  load_data();
  check_stages_train();
  build_model();
  prepare_output_folder();
  open_run_log(opts_.resume ? check_resume() : nlohmann::json::array());
}

void Trainer::join_ranks() {
  const dist::LaunchInfo launch = dist::detect_launch();
  device_ = setup_device(cfg_.train, launch);
  if (device_.is_cpu()) CpuMemoryTracker::install();
  // One process runs without a group, unless dist.backend names one it can use (a one-rank
  // group, to exercise that backend); a cluster config's nccl on a CPU smoke test is ignored.
  const bool one_rank_group = cfg_.dist.backend == config::Backend::kGloo ||
                              (cfg_.dist.backend == config::Backend::kNccl && device_.is_cuda());
  dist_ = launch.world > 1 || one_rank_group ? dist::Context::create(launch, cfg_.dist, device_)
                                             : dist::Context::single();
  rank_ = dist_->rank();
  world_ = dist_->world();
  if (rank_ != 0) sft::log::set_level(sft::log::Level::kWarn);  // rank 0 speaks for the job
  StopSignal::install();
  check_run_folder(cfg_, opts_.resume, opts_.overwrite, *dist_,
                   rank_);  // refused before anything is read or written
  require_agreement(*dist_, run_identity(cfg_), "the run configuration");
  data::rows_accumulation(cfg_, world_);  // a global batch this world size cannot keep stops every rank now
}

void Trainer::load_data() {
  // Rank 0 tokenizes into the cache first; the others then load it.
  if (rank_ == 0) data_ = data::build_run_data(cfg_, world_);
  dist_->barrier();
  if (rank_ != 0) data_ = data::build_run_data(cfg_, world_);
  pad_id_ = data_.tokenizer->pad_id() >= 0 ? data_.tokenizer->pad_id() : 0;
}

void Trainer::check_stages_train() {
  // A stage with nothing to train would export an untrained model and exit 0.
  for (std::size_t s = 0; s < data_.streams.size(); ++s) {
    const data::StageStream& st = *data_.streams[s];
    const std::string stage = "stage " + std::to_string(s + 1) + " (" + cfg_.stages[s].name + ")";
    if (st.samples_per_epoch() == 0)
      throw DataError(stage + ": nothing to train: no selected sample fits data.max_seq_len " +
                      std::to_string(cfg_.data.max_seq_len) +
                      " (data.truncation: " + config::name(cfg_.data.truncation) +
                      " drops longer ones); raise data.max_seq_len or use data.truncation: truncate");
    if (st.trained_tokens() == 0)
      throw DataError(stage + ": nothing to train: its " + std::to_string(st.samples_per_epoch()) +
                      " samples hold no trained token (every response is masked or empty)");
    bool learns = false;
    for (std::int64_t i = 0; i < st.steps() && !learns; ++i) learns = stage_lr(static_cast<int>(s), i) > 0;
    if (!learns)
      throw ConfigError(
          stage + ": its " + std::to_string(st.steps()) + " optimizer step(s) all run at learning rate 0 " +
          "(warmup: " + std::to_string(st.samples_per_epoch()) + " samples per epoch" +
          (cfg_.train.samples_per_step > 0
               ? " in steps of train.samples_per_step " + std::to_string(cfg_.train.samples_per_step)
               : std::string()) +
          "); nothing would be learned: lower train.samples_per_step, or set train.warmup_ratio and "
          "train.warmup_steps to 0");
  }
}

void Trainer::build_model() {
  const RunModel rm = resolve_run_model(cfg_);
  const model::LlamaConfig& lc = rm.config;
  model_config_ = rm.config_json;
  {
    // The config agreed; the files it names may still differ between nodes.
    Settings built = flatten(model_config_, "model (config.json + model.config)");
    for (std::size_t s = 0; s < data_.streams.size(); ++s)
      built["stage " + cfg_.stages[s].name + " data stream"] = data_.streams[s]->fingerprint();
    require_agreement(*dist_, built, "the model and the data streams");
  }
  check_vocab_covers(rm, data_.tokenizer->vocab_size(), cfg_);
  if (rm.pretrained)
    as_input_error([&] { model::check_weights(lc, cfg_.model.path); });  // model.path: bad input, exit 2
  // Built without storage: the optimizer allocates what this rank owns (everything, or its
  // ZeRO-3 chunks) and fills it straight from the safetensors files or the seeded init, so
  // no rank ever holds a parameter it does not own. bf16-pure keeps bf16 weights (no fp32
  // master copy); otherwise fp32 master weights.
  meter_ = std::make_unique<PhaseMeter>(device_);  // its baseline: what is live before the model
  model_ = std::make_unique<model::Llama>(
      lc, device_, cfg_.train.precision == config::Precision::kBf16Pure ? c10::kBFloat16 : c10::kFloat,
      /*materialize=*/false);
  model_->set_activation_checkpointing(cfg_.train.activation_checkpointing);
  {
    const model::ParamSource source =
        rm.pretrained ? as_input_error([&] { return model::weights_source(*model_, cfg_.model.path); })
                      : model_->init_source(cfg_.seed);
    opt_ = std::make_unique<FlatAdamW>(*model_,
                                       AdamWOptions{cfg_.train.adam_beta1, cfg_.train.adam_beta2,
                                                    cfg_.train.adam_eps, cfg_.train.weight_decay},
                                       world_, rank_, Sharding::for_strategy(cfg_.dist.strategy), &source);
  }  // the source (its mapped files, or the parameter being drawn) goes here
  if (!opt_->sharding().params)
    dist_->broadcast(opt_->params(), 0);  // replicas start from rank 0's values, bit for bit
  meter_->end("load");
  build_peak_bytes_ = meter_->peaks().at("load");
  state_bytes_ = current_tensor_bytes(device_) - meter_->baseline();
  plan_ = plan_memory(memory_plan_input(cfg_, rm, &data_, world_));
  dp_ = std::make_unique<DataParallel>(*model_, *opt_, dist_, DataParallelOptions::from(cfg_));
}

void Trainer::prepare_output_folder() {
  // The input is read and checked: the run's first write is its folder's lock.
  lock_run_folder();
  fs::make_dirs(cfg_.output_dir);
  checkpoints_ =
      std::make_unique<CheckpointStore>(fs::join(cfg_.output_dir, "checkpoints"),
                                        static_cast<std::size_t>(cfg_.train.checkpoint_staging_mb) << 20);
  if (rank_ == 0) {  // this rank holds the folder's lock: no save is in flight
    for (const auto& n : checkpoints_->remove_temporaries())
      sft::log::warn("removed {}/{}: a checkpoint an earlier run did not finish writing",
                     checkpoints_->root(), n);
    for (const auto& entry : stale_outputs_) {
      sft::log::warn("removing {}/{}: {}", cfg_.output_dir, entry,
                     opts_.overwrite ? "--overwrite replaces the earlier run" : "this run starts over");
      fs::remove_all(fs::join(cfg_.output_dir, entry));
    }
  }
}

void Trainer::open_run_log(const nlohmann::json& overrides) {
  std::vector<std::int64_t> stage_steps;
  for (const auto& st : data_.streams) stage_steps.push_back(st->steps());
  log_ = std::make_unique<RunLog>(cfg_, stage_steps, rank_ == 0);
  trace_ = std::make_unique<TraceRecorder>(device_);
  if (rank_ == 0) {
    nlohmann::json settings = nlohmann::json::array();
    for (const auto& s : cfg_.settings)
      settings.push_back({{"key", s.key}, {"value", s.value}, {"source", s.source}});
    nlohmann::json resolved = {{"config", cfg_.to_json()}, {"settings", settings}};
    if (!overrides.empty()) resolved["resume_overrides"] = overrides;
    std::vector<std::string> stage_dirs;
    for (const auto& st : cfg_.stages) stage_dirs.push_back(stage_output_name(stage_dirs.size(), st.name));
    record_outputs(cfg_.output_dir, stage_dirs);  // what a later --overwrite may remove: only these
    fs::write_file_atomic(fs::join(cfg_.output_dir, "config.resolved.json"), resolved.dump(2) + "\n");
    fs::write_file_atomic(fs::join(cfg_.output_dir, "data_manifest.json"),
                          data::data_manifest(cfg_, data_).dump() + "\n");
    log_settings();
    log_plan();
    sft::log::info("global batch: {}", data::describe_global_batch(cfg_, world_));
    // What building the model cost this rank: its training state (all of it, or its ZeRO
    // shards) and the peak while building, which stays near it because nothing else of the
    // model is ever materialised.
    sft::log::info("model state on each rank: {:.1f} MiB ({}), peak {:.1f} MiB while building it",
                   static_cast<double>(state_bytes_) / 1048576.0, config::name(cfg_.dist.strategy),
                   static_cast<double>(build_peak_bytes_) / 1048576.0);
    log_->record({{"event", "build"},
                  {"rank", 0},
                  {"state_bytes", state_bytes_},
                  {"build_peak_bytes", build_peak_bytes_},
                  {"parameters", model_->num_parameters()},
                  {"world_size", world_},
                  {"strategy", config::name(cfg_.dist.strategy)}});
  }
}

// The data-parallel engine refers to the model and the optimizer (and detaches itself from
// the model): it goes first, whatever the members' order.
Trainer::~Trainer() { dp_.reset(); }

bool Trainer::stop_requested() {
  if (!dist_->distributed()) return StopSignal::requested();
  // The ranks agree one step late: each step all-reduces every rank's request on the device
  // and reads the previous step's vote, copied to the host by now, so that the host never
  // waits for the step it has just queued.
  if (stop_vote_.pending()) dist_->await([&] { return stop_vote_.ready(); }, "the stop vote (all-reduce)");
  const bool stop = stop_vote_.pending() && stop_vote_.get().item<double>() > 0;
  at::Tensor vote = at::full({}, StopSignal::requested() ? 1.0 : 0.0,
                             at::TensorOptions().dtype(at::kDouble).device(device_));
  dist_->all_reduce_sum(vote);
  stop_vote_ = cuda::HostRead(vote);
  return stop;
}

double Trainer::stage_lr(int stage, std::int64_t step) const {
  const auto& spec = cfg_.stages[static_cast<std::size_t>(stage)];
  const std::int64_t total = data_.streams[static_cast<std::size_t>(stage)]->steps();
  return lr_at(spec.schedule, spec.lr, spec.min_lr_ratio,
               warmup_steps(spec.warmup_ratio, spec.warmup_steps, total), total, step);
}

// ---- the step ----------------------------------------------------------------------------------

Trainer::StepStats Trainer::train_step(int stage, std::int64_t step, std::int64_t global_step) {
  const data::StageStream& stream = *data_.streams[static_cast<std::size_t>(stage)];
  StepStats st;
  const std::int64_t step_trained_tokens = stream.step_trained_tokens(step);  // all ranks and micro-batches
  const bool bf16 = cfg_.train.precision != config::Precision::kFp32;
  at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device_));

  dist_->end_comm_window(/*keep=*/false);  // what ran between steps is not this step's
  meter_->begin();
  opt_->zero_grad();
  dp_->begin_step();
  // rows_accumulation (train.grad_accum, or from train.rows_per_step), or as many as the step's samples need
  const std::int64_t accumulation = stream.accumulation(step);
  for (std::int64_t m = 0; m < accumulation; ++m) {
    const data::MicroBatch* mb = stream.micro_batch(step, rank_, m);
    // A rank past the end of a short last step runs an empty micro-batch, so that every
    // rank issues the same collectives.
    data::Batch b =
        mb ? data::make_batch(*mb, data_.datasets, pad_id_)
           : data::make_single_batch({data_.tokenizer->bos_id() >= 0 ? data_.tokenizer->bos_id() : 0}, {0});
    // Built on the host and uploaded once (pinned, asynchronous on a GPU); the packed
    // attention plan too, so that no layer reads anything back.
    const bool gpu = device_.is_cuda();
    auto upload = [&](const at::Tensor& t) {
      return gpu ? t.pin_memory().to(device_, /*non_blocking=*/true) : t;
    };
    at::Tensor ids = upload(b.input_ids), pos = upload(b.position_ids), labels = upload(b.labels);
    at::Tensor trained_positions =
        upload(b.trained_positions);  // the loss's rows, known here: no host read in the step
    at::Tensor segment_ids = b.segment_ids.defined() ? upload(b.segment_ids) : at::Tensor();
    if (segment_ids.defined()) model_->plan_packed(b.segment_ids, segment_ids);
    dp_->begin_micro(m + 1 == accumulation);
    at::Tensor loss;
    {
      model::AutocastGuard autocast(device_, c10::kBFloat16, bf16);
      loss = model_->loss_sum(ids, pos, segment_ids, labels, trained_positions);
    }
    // Normalised by the trained tokens of the whole optimizer step, so any split of the
    // step into micro-batches (or ranks) yields the same gradient.
    if (step_trained_tokens > 0) (loss / static_cast<double>(step_trained_tokens)).backward();
    loss_sum += loss.detach();
  }
  dp_->finish_gradients();
  meter_->end("forward_backward");
  meter_->begin();
  // Nothing is read back: the global loss and gradient norm, and whether they are finite,
  // stay on the device; a non-finite step updates nothing (every rank sees the same global
  // figures, so all skip together).
  at::Tensor total = loss_sum.to(at::kDouble);
  dist_->all_reduce_sum(total);
  if (std::find(opts_.inject_nonfinite.begin(), opts_.inject_nonfinite.end(), global_step) !=
      opts_.inject_nonfinite.end())
    total.fill_(NAN);
  st.loss =
      step_trained_tokens > 0 ? total / static_cast<double>(step_trained_tokens) : at::zeros_like(total);
  st.grad_norm = opt_->clip_grad_norm_on_device(cfg_.train.max_grad_norm, dist_.get());
  st.skipped = at::logical_not(at::isfinite(st.loss)).logical_or(at::logical_not(at::isfinite(st.grad_norm)));
  st.tokens = stream.step_tokens(step);
  st.trained_tokens = step_trained_tokens;
  opt_->step(stage_lr(stage, step), st.skipped);
  dp_->after_step();
  meter_->end("optimizer");
  dist_->end_comm_window(/*keep=*/true);
  return st;
}

// ---- the loop --------------------------------------------------------------------------------

TrainResult Trainer::fit() {
  Position pos = restore();
  log_->start(pos.global_step, total_steps());
  for (int s = pos.stage; s < num_stages(); ++s) {
    const std::int64_t first = s == pos.stage ? pos.step : 0;
    if (!run_stage(s, first, pos)) break;  // train.max_steps reached
    end_stage(s, /*ran=*/first < stream(s).steps(), pos);
  }
  return end_run(pos);
}

// Stage s's steps from `first`, each followed by what is due once in a while. False when
// train.max_steps cuts the stage short.
bool Trainer::run_stage(int s, std::int64_t first, Position& pos) {
  // Each stage starts a fresh optimizer, as the paper trains each stage as its own run.
  if (first == 0 && s > 0 && cfg_.train.reset_optimizer_between_stages) opt_->reset_state();
  log_->begin_stage(s);
  const std::int64_t steps = stream(s).steps();
  for (std::int64_t step = first; step < steps; ++step) {
    if (cfg_.train.max_steps > 0 && pos.global_step >= cfg_.train.max_steps) {
      read_back(false);
      return false;
    }
    // ---- the step: its figures stay on the device ------------------------------------------
    if (pos.global_step + 1 == opts_.profile_first) trace_->start();
    pending_.push_back({train_step(s, step, pos.global_step + 1), s, step, pos.global_step + 1});
    pos = {s, step + 1, pos.global_step + 1};
    if (trace_->active() && pos.global_step >= opts_.profile_last) save_trace();

    // ---- once in a while: the figures read back and logged, a checkpoint, a stop --------------
    const bool last = step + 1 == steps;
    const bool log_now = (step + 1) % cfg_.train.log_every == 0 || step == first || last;
    const bool save_now = !last && cfg_.train.save_every > 0 && pos.global_step % cfg_.train.save_every == 0;
    const bool stop = stop_requested();
    if (log_now || save_now || stop) read_back(log_now);  // a checkpoint holds the non-finite counters
    if (save_now || stop) save_checkpoint(pos, /*complete=*/stop);  // a stop exits once it is on disk
    if (stop) throw stopped_after(pos);
  }
  read_back(false);
  return true;
}

// Reads the pending steps' figures back (one transfer) and runs, in order, the non-finite
// policy and the run log on each; the last one's line is written when `log_last`.
void Trainer::read_back(bool log_last) {
  if (pending_.empty()) return;
  std::vector<at::Tensor> figures;
  for (const auto& p : pending_)
    for (const at::Tensor& t : {p.st.loss, p.st.grad_norm, p.st.skipped.to(at::kDouble)})
      figures.push_back(t.reshape({1}));
  dist_->drain();  // a collective that never completes is reported, not waited for forever
  const at::Tensor host = at::cat(figures).cpu();
  const double* v = host.data_ptr<double>();
  const std::vector<dist::Context::CommTimes> comm = dist_->take_comm_times();  // one per step, in order
  for (std::size_t i = 0; i < pending_.size(); ++i) {
    const Pending& p = pending_[i];
    const double loss = v[3 * i], grad_norm = v[3 * i + 1];
    if (v[3 * i + 2] > 0) {  // skipped: nothing was updated
      ++skipped_total_;
      const std::string& name = cfg_.stages[static_cast<std::size_t>(p.stage)].name;
      if (++consecutive_nonfinite_ >= cfg_.train.max_nonfinite_steps)
        throw Error("training diverged: " + std::to_string(consecutive_nonfinite_) +
                    " consecutive steps with a non-finite loss or gradient norm (stage " + name + ", step " +
                    std::to_string(p.step + 1) + "); lower train.lr or check the data");
      sft::log::warn("stage {} step {}: non-finite loss {} or grad norm {}; step skipped ({} in a row)", name,
                     p.step + 1, loss, grad_norm, consecutive_nonfinite_);
      continue;
    }
    consecutive_nonfinite_ = 0;
    StepFigures f{p.stage,
                  p.step,
                  p.global_step,
                  stream(p.stage).epoch_at(p.step),
                  loss,
                  stage_lr(p.stage, p.step),
                  grad_norm,
                  p.st.tokens,
                  p.st.trained_tokens};
    if (i < comm.size()) {
      f.comm_ms = comm[i].comm_ms;
      f.comm_wait_ms = comm[i].wait_ms;
    }
    log_->step(f, log_last && i + 1 == pending_.size(), meter_->run_peak());
  }
  pending_.clear();
}

// A stage's end: its losses on record, its model exported (and evaluated) when asked, and a
// checkpoint at the next stage's start.
void Trainer::end_stage(int s, bool ran, Position& pos) {
  log_->end_stage(s, pos.global_step, ran);
  result_.stage_first_loss.push_back(log_->stage_first_loss());
  result_.stage_last_loss.push_back(log_->stage_last_loss());
  const std::string name =
      stage_output_name(static_cast<std::size_t>(s), cfg_.stages[static_cast<std::size_t>(s)].name);
  const bool last = s + 1 == num_stages();
  if (!last && (cfg_.train.export_stage_models || cfg_.eval.at_stage_end)) {
    export_model(fs::join(cfg_.output_dir, name));
    if (cfg_.eval.at_stage_end) run_eval(fs::join(cfg_.output_dir, name), name, s, pos.global_step);
  }
  pos = {s + 1, 0, pos.global_step};
  // A stage resumed at its very end (a stop after its last step) ran nothing here: the stop's
  // checkpoint already holds this global step. The last stage's marks the end of training.
  if (ran || last) save_checkpoint(pos, /*complete=*/last);
}

// The run's end: the final model exported (and evaluated), memory and totals reported.
TrainResult Trainer::end_run(const Position& pos) {
  if (pos.global_step > 0 && skipped_total_ >= pos.global_step)
    throw Error(
        "training failed: all " + std::to_string(pos.global_step) +
        " steps had a non-finite loss or gradient norm, so nothing was learned and no model is exported; "
        "check the data and lower train.lr");
  TrainResult result = std::move(result_);
  result.steps = pos.global_step;
  result.skipped_steps = skipped_total_;
  result.final_dir = fs::join(cfg_.output_dir, "final");
  export_model(result.final_dir);
  if ((cfg_.eval.at_end || cfg_.eval.at_stage_end) && !cfg_.eval.benchmarks.empty()) {
    // Training is over and final/ holds the model: give the training state back before the
    // evaluator loads the exported model (33B: 65 GB in bf16 on every GPU).
    dist_->barrier();
    dp_.reset();
    opt_.reset();
    model_.reset();
    run_eval(result.final_dir, "final", num_stages() - 1, pos.global_step);
  }
  result.peak_memory_bytes = meter_->run_peak();
  report_memory();
  const double peak_mb = static_cast<double>(result.peak_memory_bytes) / 1048576.0;
  log_->record({{"event", "end"},
                {"step", pos.global_step},
                {"skipped_steps", skipped_total_},
                {"peak_memory_mb", peak_mb}});
  if (rank_ == 0)
    sft::log::info("done: {} steps ({} skipped) in {}, peak memory {:.0f} MiB ({}); model saved to {}",
                   pos.global_step, skipped_total_, Progress::format_duration(log_->elapsed_s()), peak_mb,
                   device_.is_cuda() ? "CUDA caching allocator, allocated" : "CPU tensors", result.final_dir);
  return result;
}

void Trainer::save_trace() {
  dist_->drain();
  cuda::synchronize(device_);  // the traced steps' kernels have run
  const std::string dir = fs::join(cfg_.output_dir, "profile");
  fs::make_dirs(dir);
  const std::string path =
      fs::join(dir, "steps_" + std::to_string(opts_.profile_first) + "-" +
                        std::to_string(opts_.profile_last) + ".rank" + std::to_string(rank_) + ".trace.json");
  trace_->stop_and_save(path);
  sft::log::info("trace of steps {}-{}: {} (open it in https://ui.perfetto.dev or chrome://tracing)",
                 opts_.profile_first, opts_.profile_last, path);
  log_->record({{"event", "trace"},
                {"first_step", opts_.profile_first},
                {"last_step", opts_.profile_last},
                {"path", path}});
}

StoppedBySignal Trainer::stopped_after(const Position& pos) const {
  const std::string how =
      !opts_.resume_command.empty()
          ? opts_.resume_command
          : "sft train --config " + cfg_.source_file + " --output-dir " + cfg_.output_dir + " --resume auto";
  const int sig = StopSignal::signal_number() ? StopSignal::signal_number() : 15;
  return StoppedBySignal("stopped by signal " + std::to_string(sig) + " after step " +
                             std::to_string(pos.global_step) + "; checkpoint saved. Resume with: " + how,
                         sig);
}

std::int64_t Trainer::total_steps() const {
  std::int64_t total = 0;
  for (const auto& s : data_.streams) total += s->steps();
  return cfg_.train.max_steps > 0 ? std::min(total, cfg_.train.max_steps) : total;
}

}  // namespace sft::train
