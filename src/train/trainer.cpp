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
#include "sft/train/run_folder.h"
#include "sft/train/stop_signal.h"
#include "sft/train/tfevents.h"
#include "sft/util/cuda.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"
#include "sft/util/log.h"

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
  at::Tensor b = bytes.contiguous();
  return sft::hex(b.data_ptr<std::uint8_t>(), static_cast<std::size_t>(b.numel()));
}

at::Tensor unhex(const std::string& s) {
  at::Tensor t = at::empty({static_cast<std::int64_t>(s.size() / 2)}, at::kByte);
  auto* p = t.data_ptr<std::uint8_t>();
  for (std::size_t i = 0; i + 1 < s.size(); i += 2) p[i / 2] = static_cast<std::uint8_t>(std::stoi(s.substr(i, 2), nullptr, 16));
  return t;
}

}  // namespace

c10::Device setup_device(const config::TrainSpec& t, int local_rank) {
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
  if (t.device != "cpu" && t.device != "auto" && t.device != "cuda" && t.device.rfind("cuda:", 0) != 0)
    throw ConfigError("device \"" + t.device + "\" is not one sft runs on: cpu, cuda, cuda:N or auto");
  if (t.device == "cpu" || (t.device == "auto" && !cuda::available())) return c10::Device(c10::kCPU);
  if (!cuda::available())
    throw ConfigError("train.device: " + t.device + " requested but CUDA is not available (" +
                      (cuda::compiled() ? "no GPU visible" : "sft was built without CUDA") + ")");
  // cuda / auto: GPU LOCAL_RANK of those visible (modulo their number: a launcher that gives
  // each task its own CUDA_VISIBLE_DEVICES leaves one GPU, index 0, per process).
  const int gpu = local_rank % cuda::device_count();
  c10::Device d = t.device == "cuda" || t.device == "auto" ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(gpu))
                                                           : c10::Device(t.device);
  cuda::set_device(d.index());  // the caching allocator and NCCL use the current device
  return d;
}

// A step's figures as train_step leaves them: on the device, so that no step waits for the
// GPU. fit() reads them back once per logged step (and before a checkpoint), all at once.
struct Trainer::StepStats {
  at::Tensor loss;       // fp64, mean per trained token
  at::Tensor grad_norm;  // fp64, before clipping
  at::Tensor skipped;    // bool: a non-finite loss or norm, so nothing was updated
  std::int64_t tokens = 0, targets = 0;  // over all ranks, from the stream's plan
};

Trainer::Trainer(config::RunConfig cfg, TrainerOptions opts)
    : cfg_(std::move(cfg)), opts_(std::move(opts)), device_(c10::kCPU) {
  const dist::LaunchInfo launch = dist::detect_launch();
  device_ = setup_device(cfg_.train, launch.local_rank);
  if (device_.is_cpu()) CpuMemoryTracker::install();
  // One process runs without a group, unless dist.backend names one it can use (a one-rank
  // group, to exercise that backend); a cluster config's nccl on a CPU smoke test is ignored.
  const bool one_rank_group =
      cfg_.dist.backend == config::Backend::kGloo || (cfg_.dist.backend == config::Backend::kNccl && device_.is_cuda());
  dist_ = launch.world > 1 || one_rank_group ? dist::Context::create(launch, cfg_.dist, device_)
                                             : dist::Context::single();
  rank_ = dist_->rank();
  world_ = dist_->world();
  if (rank_ != 0) sft::log::set_level(sft::log::Level::kWarn);  // rank 0 speaks for the job
  StopSignal::install();
  lock_run_folder();
  require_agreement(*dist_, run_identity(cfg_), "the run configuration");
  rows_accumulation(cfg_, world_);  // a global batch this world size cannot keep stops every rank now
  fs::make_dirs(cfg_.output_dir);
  checkpoints_ = std::make_unique<CheckpointStore>(fs::join(cfg_.output_dir, "checkpoints"));
  if (rank_ == 0) {  // this rank holds the folder's lock: no save is in flight
    for (const auto& n : checkpoints_->remove_temporaries())
      sft::log::warn("removed {}/{}: a checkpoint an earlier run did not finish writing", checkpoints_->root(), n);
    for (const auto& entry : stale_outputs_) {
      sft::log::warn("removing {}/{}: {}", cfg_.output_dir, entry,
                     opts_.overwrite ? "--overwrite replaces the earlier run" : "this run starts over");
      fs::remove_all(fs::join(cfg_.output_dir, entry));
    }
  }

  // Rank 0 tokenizes into the cache first; the others then load it.
  if (rank_ == 0) data_ = build_run_data(cfg_, world_);
  dist_->barrier();
  if (rank_ != 0) data_ = build_run_data(cfg_, world_);
  pad_id_ = data_.tokenizer->pad_id() >= 0 ? data_.tokenizer->pad_id() : 0;

  // ---- model -----------------------------------------------------------------------------
  nlohmann::json mc = nlohmann::json::object();
  if (!cfg_.model.path.empty()) mc = model::load_llama_config(cfg_.model.path).raw;
  if (cfg_.model.config.is_object())
    for (auto it = cfg_.model.config.begin(); it != cfg_.model.config.end(); ++it) mc[it.key()] = it.value();
  model::LlamaConfig lc = model::LlamaConfig::from_json(mc, cfg_.model.path.empty() ? "model.config" : cfg_.model.path);
  model_config_ = mc;
  {
    // The config agreed; the files it names may still differ between nodes.
    Settings built = flatten(mc, "model (config.json + model.config)");
    for (std::size_t s = 0; s < data_.streams.size(); ++s)
      built["stage " + cfg_.stages[s].name + " data stream"] = data_.streams[s]->fingerprint();
    require_agreement(*dist_, built, "the model and the data streams");
  }
  if (lc.vocab_size < data_.tokenizer->vocab_size())
    throw ConfigError("model.config.vocab_size: " + std::to_string(lc.vocab_size) + " is smaller than the tokenizer's " +
                      std::to_string(data_.tokenizer->vocab_size()) + " pieces (" + cfg_.tokenizer + ")");
  const bool pretrained = cfg_.model.init == config::ModelInit::kPretrained ||
                          (cfg_.model.init == config::ModelInit::kAuto && !cfg_.model.path.empty() && model::has_weights(cfg_.model.path));
  if (pretrained) model::check_weights(lc, cfg_.model.path);
  // Built without storage: the optimizer allocates what this rank owns (everything, or its
  // ZeRO-3 chunks) and fills it straight from the safetensors files or the seeded init, so
  // no rank ever holds a parameter it does not own. bf16-pure keeps bf16 weights (no fp32
  // master copy); otherwise fp32 master weights.
  meter_ = std::make_unique<PhaseMeter>(device_);  // its baseline: what is live before the model
  model_ = std::make_unique<model::Llama>(lc, device_, cfg_.train.precision == config::Precision::kBf16Pure ? c10::kBFloat16 : c10::kFloat,
                                          /*materialize=*/false);
  model_->set_activation_checkpointing(cfg_.train.activation_checkpointing);
  {
    const model::ParamSource source =
        pretrained ? model::weights_source(*model_, cfg_.model.path) : model_->init_source(cfg_.seed);
    opt_ = std::make_unique<FlatAdamW>(*model_,
                                       AdamWOptions{cfg_.train.adam_beta1, cfg_.train.adam_beta2, cfg_.train.adam_eps,
                                                    cfg_.train.weight_decay},
                                       world_, rank_, Sharding::for_strategy(cfg_.dist.strategy), &source);
  }  // the source (its mapped files, or the parameter being drawn) goes here
  if (!opt_->sharding().params) dist_->broadcast(opt_->params(), 0);  // replicas start from rank 0's values, bit for bit
  meter_->end("load");
  build_peak_bytes_ = meter_->peaks().at("load");
  state_bytes_ = current_tensor_bytes(device_) - meter_->baseline();
  plan_ = plan_memory(memory_plan_input(cfg_, lc, &data_, world_));
  dp_ = std::make_unique<DataParallel>(*model_, *opt_, dist_, cfg_.dist.strategy, cfg_.dist.bucket_mb);

  const nlohmann::json overrides = opts_.resume ? check_resume() : nlohmann::json::array();
  if (rank_ == 0) {
    nlohmann::json settings = nlohmann::json::array();
    for (const auto& s : cfg_.settings) settings.push_back({{"key", s.key}, {"value", s.value}, {"source", s.source}});
    nlohmann::json resolved = {{"config", cfg_.to_json()}, {"settings", settings}};
    if (!overrides.empty()) resolved["resume_overrides"] = overrides;
    fs::write_file_atomic(fs::join(cfg_.output_dir, "config.resolved.json"), resolved.dump(2) + "\n");
    fs::write_file_atomic(fs::join(cfg_.output_dir, "data_manifest.json"), data_manifest(cfg_, data_).dump() + "\n");
    tb_ = std::make_unique<TfEventsWriter>(fs::join(cfg_.output_dir, "tensorboard"));
    log_settings();
    log_plan();
    sft::log::info("global batch: {}", describe_global_batch(cfg_, world_));
    // What building the model cost this rank: its training state (all of it, or its ZeRO
    // shards) and the peak while building, which stays near it because nothing else of the
    // model is ever materialised.
    sft::log::info("model state on each rank: {:.1f} MiB ({}), peak {:.1f} MiB while building it",
                   static_cast<double>(state_bytes_) / 1048576.0, config::name(cfg_.dist.strategy),
                   static_cast<double>(build_peak_bytes_) / 1048576.0);
    append_line(fs::join(cfg_.output_dir, "metrics.jsonl"),
                nlohmann::json{{"event", "build"}, {"rank", 0}, {"state_bytes", state_bytes_},
                               {"build_peak_bytes", build_peak_bytes_}, {"parameters", model_->num_parameters()},
                               {"world_size", world_}, {"strategy", config::name(cfg_.dist.strategy)}}
                    .dump());
  }
}

Trainer::~Trainer() = default;

// Rank 0 takes output_dir's lock (the other ranks write only where rank 0 tells them:
// their checkpoint shards). Its outcome is shared, so that a refused run stops every rank
// at once rather than at the next collective's timeout.
void Trainer::lock_run_folder() {
  nlohmann::json refused = nullptr;
  if (rank_ == 0) {
    try {
      // A folder holds one run (run_folder.h): refused before the lock file is written, so
      // that a refused run leaves the folder as it was. A folder in use is the lock's to
      // report (exit code 75: sweeps skip it); it is checked once its holder let go.
      auto check = [&] {
        return outputs_to_replace(cfg_.output_dir, cfg_.to_json(),
                                  !CheckpointStore(fs::join(cfg_.output_dir, "checkpoints")).list().empty(),
                                  opts_.resume, opts_.overwrite);
      };
      const bool in_use = !RunLock::holder(cfg_.output_dir).empty();
      if (!in_use) stale_outputs_ = check();
      lock_ = RunLock::acquire(cfg_.output_dir);
      if (in_use) stale_outputs_ = check();
    } catch (const Error& e) {
      if (!dist_->distributed()) throw;
      refused = {{"code", e.exit_code()}, {"message", e.what()}};
    }
  }
  if (!dist_->distributed()) return;
  const nlohmann::json r0 = nlohmann::json::parse(dist_->all_gather_strings(refused.dump())[0]);
  if (r0.is_null()) return;
  const std::string msg = (rank_ == 0 ? "" : "rank 0: ") + r0["message"].get<std::string>();
  const int code = r0["code"].get<int>();
  if (code == 75) throw RunLockedError(msg);
  if (code == 2) throw ConfigError(msg);
  throw Error(msg);
}

std::string Trainer::tensor_fingerprint() const {
  std::string names;
  for (const auto& slot : opt_->layout().slots) {
    names += slot.name + "[";
    for (auto d : slot.shape) names += std::to_string(d) + ",";
    names += "];";
  }
  return sha256_hex(names);
}

nlohmann::json Trainer::check_resume() {
  nlohmann::json accepted = nlohmann::json::array();
  const auto found = checkpoints_->list();
  if (found.empty()) return accepted;
  nlohmann::json st;
  try {
    st = read_trainer_state(found.front().dir);
  } catch (const std::exception&) {
    return accepted;  // unreadable: restore() falls back to an older checkpoint, and says so
  }
  const std::string dir = found.front().dir;
  std::vector<std::string> problems;
  auto compare = [&](const Settings& was, const Settings& now, const std::string& prefix, bool overridable) {
    std::set<std::string> keys;
    for (const auto& [k, v] : was) keys.insert(k);
    for (const auto& [k, v] : now) keys.insert(k);
    for (const auto& k : keys) {
      const auto a = was.find(k), b = now.find(k);
      const std::string old_v = a == was.end() ? "(unset)" : a->second, new_v = b == now.end() ? "(unset)" : b->second;
      if (old_v == new_v) continue;
      const std::string key = prefix + k;
      if (overridable && config::resume_may_change(key)) continue;
      // A stage's settings derive from train.* (stages[1].lr from train.lr): overriding one
      // overrides what it derives.
      const auto close = key.find("].");
      const std::string derived_from = key.rfind("stages[", 0) == 0 && close != std::string::npos
                                           ? "train." + key.substr(close + 2) : std::string();
      const bool allowed = overridable && std::any_of(opts_.resume_overrides.begin(), opts_.resume_overrides.end(),
                                                      [&](const std::string& o) {
                                                        return key == o || key.rfind(o + ".", 0) == 0 ||
                                                               key.rfind(o + "[", 0) == 0 || o == derived_from;
                                                      });
      if (allowed) {
        accepted.push_back({{"key", key}, {"checkpoint", old_v}, {"now", new_v},
                            {"from_step", st.value("global_step", std::int64_t(0))}});
        continue;
      }
      problems.push_back(key + ": the checkpoint has " + old_v + ", this run has " + new_v);
    }
  };
  if (st.contains("model_config")) compare(flatten(st["model_config"]), flatten(model_config_), "model ", false);
  if (st.contains("tensors") && st["tensors"] != tensor_fingerprint())
    problems.push_back("the model's tensor names and shapes differ from the checkpoint's");
  if (st.contains("config")) {
    Settings was = flatten(st["config"]), now = flatten(cfg_.to_json());
    compare(was, now, "", true);
  }
  if (!problems.empty()) {
    std::string list;
    for (std::size_t i = 0; i < problems.size() && i < 12; ++i) list += "\n  " + problems[i];
    if (problems.size() > 12) list += "\n  ... and " + std::to_string(problems.size() - 12) + " more";
    throw ConfigError(dir + ": this run is not the checkpoint's run:" + list +
                      "\nResume with the checkpoint's settings (its config is in " +
                      fs::join(cfg_.output_dir, "config.resolved.json") +
                      "), or name a hyper-parameter you mean to change with --resume-override KEY (recorded), or "
                      "start a new --output-dir");
  }
  for (const auto& a : accepted)
    if (rank_ == 0)
      sft::log::warn("resume: {} changes from {} to {} (--resume-override)", a["key"].get<std::string>(),
                     a["checkpoint"].get<std::string>(), a["now"].get<std::string>());
  // Earlier resumes' overrides stay on record.
  nlohmann::json all = nlohmann::json::array();
  try {
    auto old = nlohmann::json::parse(fs::read_file(fs::join(cfg_.output_dir, "config.resolved.json")));
    if (old.contains("resume_overrides") && old["resume_overrides"].is_array()) all = old["resume_overrides"];
  } catch (const std::exception&) {
  }
  for (const auto& a : accepted) all.push_back(a);
  return all;
}

void Trainer::log_settings() const {
  std::size_t width = 0;
  for (const auto& s : cfg_.settings) width = std::max(width, s.key.size());
  std::string table;
  for (const auto& s : cfg_.settings) {
    std::string v = s.value.size() > 60 ? s.value.substr(0, 57) + "..." : s.value;
    table += "\n  " + s.key + std::string(width + 2 - s.key.size(), ' ') + v + std::string(v.size() < 40 ? 40 - v.size() : 1, ' ') +
             "(" + s.source + ")";
  }
  sft::log::info("settings ({}):{}", cfg_.source_file, table);
}

void Trainer::log_plan() const {
  sft::log::info("model: {} parameters ({} layers, hidden {}, heads {}/{} kv, vocab {}), {} init, device {}, {} threads, "
               "precision {}{}; {} rank(s), {}",
               model_->num_parameters(), model_->config().num_hidden_layers, model_->config().hidden_size,
               model_->config().num_attention_heads, model_->config().num_key_value_heads,
               model_->config().vocab_size, config::name(cfg_.model.init), device_.str(), at::get_num_threads(),
               config::name(cfg_.train.precision), cfg_.train.activation_checkpointing ? ", activation checkpointing" : "", world_,
               config::name(cfg_.dist.strategy));
  for (std::size_t i = 0; i < cfg_.datasets.size(); ++i) {
    const auto& st = data_.datasets[i]->stats();
    sft::log::info("data {}: {} records read, {} kept, {} bad (skipped), {} filtered, {} zero-target and {} too long "
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
      sources += (sources.empty() ? "" : ", ") + src.dataset + (src.replay ? " (replay) " : " ") +
                 std::to_string(src.records) + (src.repeat > 1 ? " x" + std::to_string(src.repeat) : "");
    sft::log::info("stage {}/{} {}: {} | {} samples x {} epochs, {} tokens ({} trained), {} steps, lr {:g} {}, "
                 "{} efficiency {:.1f}%",
                 s + 1, data_.streams.size(), spec.name, sources, st.samples_per_epoch(), spec.epochs, st.tokens(),
                 st.targets(), st.steps(), spec.lr, config::name(spec.schedule), config::name(cfg_.data.batching), 100.0 * st.packing_efficiency());
  }
}

bool Trainer::stop_requested() {
  if (!dist_->distributed()) return StopSignal::requested();
  // The ranks agree one step late: each step all-reduces every rank's request on the device
  // and reads the previous step's vote, copied to the host by now, so that the host never
  // waits for the step it has just queued.
  const bool stop = stop_vote_.pending() && stop_vote_.get().item<double>() > 0;
  at::Tensor vote = at::full({}, StopSignal::requested() ? 1.0 : 0.0, at::TensorOptions().dtype(at::kDouble).device(device_));
  dist_->all_reduce_sum(vote);
  stop_vote_ = cuda::HostRead(vote);
  return stop;
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
                          {"dist_strategy", config::name(cfg_.dist.strategy)},
                          {"rng_cpu", hex(rng)},
                          {"sft_version", SFT_VERSION},
                          {"config", cfg_.to_json()},
                          {"model_config", model_config_},
                          {"tensors", tensor_fingerprint()}};
  std::string dir;
  const Sharding sh = opt_->sharding();
  if (!sh.moments) {
    // Nothing sharded (ddp): rank 0 holds the whole state.
    if (rank_ == 0) {
      std::map<std::string, std::vector<std::pair<std::string, at::Tensor>>> files;
      files["state.safetensors"] = {{"params", opt_->params()}, {"exp_avg", opt_->exp_avg()}, {"exp_avg_sq", opt_->exp_avg_sq()}};
      dir = checkpoints_->save(next.global_step, files, state);
    }
    dist_->barrier();
  } else {
    // ZeRO: every rank writes its shard; parameters once (rank 0) unless they are sharded too.
    std::vector<std::pair<std::string, at::Tensor>> mine = {{"exp_avg", opt_->exp_avg()}, {"exp_avg_sq", opt_->exp_avg_sq()}};
    if (sh.params || rank_ == 0) mine.push_back({"params", opt_->params()});
    std::map<std::string, std::vector<std::pair<std::string, at::Tensor>>> files;
    files["rank" + std::to_string(rank_) + ".safetensors"] = mine;
    dir = checkpoints_->save_sharded(next.global_step, rank_, files, state, [this] { dist_->barrier(); });
  }
  if (rank_ == 0) {
    checkpoints_->prune(cfg_.train.keep_checkpoints);
    if (next.stage >= static_cast<int>(data_.streams.size())) sft::log::info("checkpoint {} (end of training)", dir);
    else sft::log::info("checkpoint {} (stage {}, step {} of it)", dir, next.stage + 1, next.step);
  }
  dist_->barrier();
}

Trainer::Position Trainer::restore() {
  Position p;
  if (!opts_.resume) return p;
  // Rank 0 verifies and chooses; every rank loads the same checkpoint.
  std::optional<CheckpointInfo> latest;
  if (rank_ == 0) latest = checkpoints_->latest_good();
  at::Tensor chosen = at::full({1}, latest ? latest->global_step : -1, at::kLong);
  if (device_.is_cuda()) chosen = chosen.to(device_);
  dist_->broadcast(chosen, 0);
  const std::int64_t chosen_step = chosen.cpu().item<std::int64_t>();
  if (chosen_step < 0) {
    sft::log::info("resume: no checkpoint in {}; starting from the beginning", checkpoints_->root());
    return p;
  }
  if (rank_ != 0)
    for (const auto& c : checkpoints_->list())
      if (c.global_step == chosen_step) latest = c;
  if (!latest) throw CheckpointError("rank " + std::to_string(rank_) + ": checkpoint step " + std::to_string(chosen_step) +
                                     " is not visible here (the output directory must be shared by all ranks)");
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
  if (st.value("dist_strategy", std::string("ddp")) != config::name(cfg_.dist.strategy))
    throw CheckpointError(latest->dir + ": written with dist.strategy " + st.value("dist_strategy", std::string("ddp")) +
                          ", resumed with " + config::name(cfg_.dist.strategy) + "; resume with the same strategy");
  const Sharding sh = opt_->sharding();
  auto load = [&](const std::string& file, const char* name, at::Tensor& dst) {
    auto f = model::SafetensorsFile::open(fs::join(latest->dir, file));
    at::Tensor src = f->tensor(name);
    if (src.numel() != dst.numel())
      throw CheckpointError(latest->dir + "/" + file + ": " + name + " has " + std::to_string(src.numel()) +
                            " elements, this rank needs " + std::to_string(dst.numel()));
    dst.copy_(src.to(dst.device()));
  };
  {
    at::NoGradGuard ng;
    if (!sh.moments) {
      for (const char* n : {"params", "exp_avg", "exp_avg_sq"})
        load("state.safetensors", n, n == std::string("params") ? opt_->params() : n == std::string("exp_avg") ? opt_->exp_avg() : opt_->exp_avg_sq());
    } else {
      const std::string mine = "rank" + std::to_string(rank_) + ".safetensors";
      load(mine, "exp_avg", opt_->exp_avg());
      load(mine, "exp_avg_sq", opt_->exp_avg_sq());
      load(sh.params ? mine : "rank0.safetensors", "params", opt_->params());
    }
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
  dist_->barrier();
  sft::log::info("resumed from {}: stage {}, step {} of it, {} steps done", latest->dir, p.stage + 1, p.step, p.global_step);
  return p;
}

// ---- the step ----------------------------------------------------------------------------------

Trainer::StepStats Trainer::train_step(int stage, std::int64_t step, std::int64_t global_step) {
  const data::StageStream& stream = *data_.streams[static_cast<std::size_t>(stage)];
  StepStats st;
  const std::int64_t step_targets = stream.step_targets(step);  // all ranks and micro-batches
  const bool bf16 = cfg_.train.precision != config::Precision::kFp32;
  at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device_));

  meter_->begin();
  opt_->zero_grad();
  const std::int64_t accum = stream.accumulation(step);  // grad_accum, or as many as the step's samples need
  for (std::int64_t m = 0; m < accum; ++m) {
    const data::MicroBatch* mb = stream.micro_batch(step, rank_, m);
    // A rank past the end of a short last step runs an empty micro-batch, so that every
    // rank issues the same collectives.
    data::Batch b = mb ? data::make_batch(*mb, data_.datasets, pad_id_)
                       : data::make_single_batch({data_.tokenizer->bos_id() >= 0 ? data_.tokenizer->bos_id() : 0}, {0});
    // Built on the host and uploaded once (pinned, asynchronous on a GPU); the packed
    // attention plan too, so that no layer reads anything back.
    const bool gpu = device_.is_cuda();
    auto upload = [&](const at::Tensor& t) { return gpu ? t.pin_memory().to(device_, /*non_blocking=*/true) : t; };
    at::Tensor ids = upload(b.input_ids), pos = upload(b.position_ids), labels = upload(b.labels);
    at::Tensor mask = b.segment_ids.defined() ? upload(b.segment_ids) : at::Tensor();
    if (mask.defined()) model_->plan_packed(b.segment_ids, mask);
    dp_->begin_micro(m + 1 == accum);
    at::Tensor loss;
    {
      model::AutocastGuard autocast(device_, c10::kBFloat16, bf16);
      loss = model_->loss_sum(ids, pos, mask, labels);
    }
    // Normalised by the trained tokens of the whole optimizer step, so any split of the
    // step into micro-batches (or ranks) yields the same gradient.
    if (step_targets > 0) (loss / static_cast<double>(step_targets)).backward();
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
  if (std::find(opts_.inject_nonfinite.begin(), opts_.inject_nonfinite.end(), global_step) != opts_.inject_nonfinite.end())
    total.fill_(NAN);
  st.loss = step_targets > 0 ? total / static_cast<double>(step_targets) : at::zeros_like(total);
  st.grad_norm = opt_->clip_grad_norm_on_device(cfg_.train.max_grad_norm, dist_.get());
  st.skipped = at::logical_not(at::isfinite(st.loss)).logical_or(at::logical_not(at::isfinite(st.grad_norm)));
  st.tokens = stream.step_tokens(step);
  st.targets = step_targets;
  opt_->step(stage_lr(stage, step), st.skipped);
  dp_->after_step();
  meter_->end("optimizer");
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
    struct Pending {
      StepStats st;
      std::int64_t step, global_step;
    };
    std::vector<Pending> pending;  // steps whose figures are still on the device
    // Reads the pending steps' figures back (one transfer) and runs their diagnostics in
    // order; the last one's log line when `log_last`.
    auto digest = [&](bool log_last) {
      if (pending.empty()) return;
      std::vector<at::Tensor> figures;
      for (const auto& p : pending)
        for (const at::Tensor& t : {p.st.loss, p.st.grad_norm, p.st.skipped.to(at::kDouble)}) figures.push_back(t.reshape({1}));
      const at::Tensor host = at::cat(figures).cpu();
      const double* v = host.data_ptr<double>();
      for (std::size_t i = 0; i < pending.size(); ++i) {
        const std::int64_t step = pending[i].step, global_step = pending[i].global_step;
        const double loss = v[3 * i], grad_norm = v[3 * i + 1];
        if (v[3 * i + 2] > 0) {
          ++skipped_total_;
          if (++consecutive_nonfinite_ >= cfg_.train.max_nonfinite_steps)
            throw Error("training diverged: " + std::to_string(consecutive_nonfinite_) +
                        " consecutive steps with a non-finite loss or gradient norm (stage " + spec.name + ", step " +
                        std::to_string(step + 1) + "); lower train.lr or check the data");
          sft::log::warn("stage {} step {}: non-finite loss {} or grad norm {}; step skipped ({} in a row)", spec.name,
                         step + 1, loss, grad_norm, consecutive_nonfinite_);
          continue;
        }
        consecutive_nonfinite_ = 0;
        if (std::isnan(first_loss)) first_loss = loss;
        last_loss = loss;
        window_loss += loss * static_cast<double>(pending[i].st.targets);
        window_targets += pending[i].st.targets;
        window_tokens += pending[i].st.tokens;
        const double elapsed = std::chrono::duration<double>(Clock::now() - run_start).count();
        const double eta = elapsed / static_cast<double>(std::max<std::int64_t>(1, global_step - start_global)) *
                           static_cast<double>(total_steps - global_step);
        const double lr = stage_lr(s, step);
        const ProgressState ps{s, static_cast<int>(data_.streams.size()), spec.name, step + 1, steps, global_step, loss,
                               lr, grad_norm, eta};
        progress.update(ps);
        if (!log_last || i + 1 < pending.size()) continue;
        double secs = std::chrono::duration<double>(Clock::now() - window_start).count();
        double tps = secs > 0 ? static_cast<double>(window_tokens) / secs : 0.0;
        double mean_loss = window_targets ? window_loss / static_cast<double>(window_targets) : loss;
        ProgressState logged = ps;
        logged.loss = mean_loss;
        progress.log_line(logged, tps);
        if (rank_ == 0) {
          nlohmann::json rec = {{"event", "step"}, {"step", global_step}, {"stage", spec.name},
                                {"stage_index", s}, {"stage_step", step + 1}, {"epoch", stream.epoch_at(step)},
                                {"loss", mean_loss}, {"lr", lr}, {"grad_norm", grad_norm},
                                {"tokens_per_s", tps}, {"elapsed_s", elapsed},
                                {"peak_memory_mb", static_cast<double>(meter_->run_peak()) / 1048576.0}};
          append_line(metrics, rec.dump());
          const double wall = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
          tb_->scalar("train/loss", mean_loss, global_step, wall);
          tb_->scalar("train/lr", lr, global_step, wall);
          tb_->scalar("train/grad_norm", grad_norm, global_step, wall);
          tb_->scalar("train/tokens_per_s", tps, global_step, wall);
          tb_->flush();
        }
        window_loss = 0;
        window_targets = window_tokens = 0;
        window_start = Clock::now();
      }
      pending.clear();
    };

    for (std::int64_t step = first; step < steps; ++step) {
      if (cfg_.train.max_steps > 0 && pos.global_step >= cfg_.train.max_steps) {
        limit_hit = true;
        break;
      }

      // ---- the step ------------------------------------------------------------------------
      pending.push_back({train_step(s, step, pos.global_step + 1), step, pos.global_step + 1});
      pos = {s, step + 1, pos.global_step + 1};

      // ---- once in a while: the figures read back, a checkpoint, a stop ---------------------------
      const bool stage_end = step + 1 == steps;
      const bool log_now = (step + 1) % cfg_.train.log_every == 0 || step == first || stage_end;
      const bool save_now = !stage_end && cfg_.train.save_every > 0 && pos.global_step % cfg_.train.save_every == 0;
      const bool stop = stop_requested();
      if (log_now || save_now || stop) digest(log_now);  // a checkpoint holds the skip counters
      if (save_now) save_checkpoint(pos);
      if (stop) {
        save_checkpoint(pos);
        const std::string how = !opts_.resume_command.empty()
                                    ? opts_.resume_command
                                    : "sft train --config " + cfg_.source_file + " --output-dir " + cfg_.output_dir +
                                          " --resume auto";
        const int sig = StopSignal::signal_number() ? StopSignal::signal_number() : 15;
        throw StoppedBySignal("stopped by signal " + std::to_string(sig) + " after step " +
                                  std::to_string(pos.global_step) + "; checkpoint saved. Resume with: " + how,
                              sig);
      }
    }
    digest(false);  // steps before train.max_steps cut the stage short
    if (limit_hit) break;

    // ---- stage end: export, checkpoint the position of the next stage ------------------------------
    progress.finish_stage();
    result.stage_first_loss.push_back(first_loss);
    result.stage_last_loss.push_back(last_loss);
    if (rank_ == 0) {
      if (first < steps)
        sft::log::info("stage {}/{} {} done: loss {:.4f} -> {:.4f}", s + 1, data_.streams.size(), spec.name, first_loss,
                     last_loss);
      append_line(metrics, nlohmann::json{{"event", "stage_end"}, {"stage", spec.name}, {"stage_index", s},
                                          {"step", pos.global_step}, {"first_loss", first_loss},
                                          {"last_loss", last_loss}}
                               .dump());
    }
    const bool last = s + 1 == static_cast<int>(data_.streams.size());
    if (!last && (cfg_.train.export_stage_models || cfg_.eval.at_stage_end)) {
      const std::string dir = fs::join(cfg_.output_dir, "stage" + std::to_string(s + 1) + "_" + spec.name);
      export_model(dir);
      if (cfg_.eval.at_stage_end) run_eval(dir, "stage" + std::to_string(s + 1) + "_" + spec.name, s, pos.global_step);
    }
    if (first < steps || s + 1 == static_cast<int>(data_.streams.size())) {
      pos = {s + 1, 0, pos.global_step};
      save_checkpoint(pos);
    }
  }
  if (pos.global_step > 0 && skipped_total_ >= pos.global_step)
    throw Error("training failed: all " + std::to_string(pos.global_step) +
                " steps had a non-finite loss or gradient norm, so nothing was learned and no model is exported; "
                "check the data and lower train.lr");
  result.steps = pos.global_step;
  result.skipped_steps = skipped_total_;
  result.final_dir = fs::join(cfg_.output_dir, "final");
  export_model(result.final_dir);
  const bool final_eval = (cfg_.eval.at_end || cfg_.eval.at_stage_end) && !cfg_.eval.benchmarks.empty();
  if (final_eval) {
    // Training is over and final/ holds the model: give the training state back before the
    // evaluator loads the exported model (33B: 65 GB in bf16 on every GPU).
    dist_->barrier();
    dp_.reset();
    opt_.reset();
    model_.reset();
    run_eval(result.final_dir, "final", static_cast<int>(data_.streams.size()) - 1, pos.global_step);
  }
  result.peak_memory_bytes = meter_->run_peak();
  report_memory(metrics);
  if (rank_ == 0) {
    append_line(metrics, nlohmann::json{{"event", "end"}, {"step", pos.global_step}, {"skipped_steps", skipped_total_},
                                        {"peak_memory_mb", static_cast<double>(result.peak_memory_bytes) / 1048576.0}}
                             .dump());
    sft::log::info("done: {} steps ({} skipped) in {}, peak memory {:.0f} MiB ({}); model saved to {}", pos.global_step,
                 skipped_total_, Progress::format_duration(std::chrono::duration<double>(Clock::now() - run_start).count()),
                 static_cast<double>(result.peak_memory_bytes) / 1048576.0,
                 device_.is_cuda() ? "CUDA caching allocator, allocated" : "CPU tensors", result.final_dir);
  }
  return result;
}

void Trainer::run_eval(const std::string& model_dir, const std::string& label, int stage, std::int64_t step) {
  if (cfg_.eval.benchmarks.empty()) return;
  if (!opts_.evaluate) {
    if (rank_ == 0) sft::log::warn("eval: the config asks for an evaluation but this trainer has no evaluator (run it with sft train)");
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
  const std::string dir = label == "final" ? fs::join(cfg_.output_dir, "eval") : fs::join(fs::join(cfg_.output_dir, "eval"), label);
  nlohmann::ordered_json summary = nlohmann::ordered_json::object();
  const double wall = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  const std::string stage_name = stage >= 0 && stage < static_cast<int>(cfg_.stages.size()) ? cfg_.stages[static_cast<std::size_t>(stage)].name : "";
  for (auto it = results.begin(); it != results.end(); ++it) {
    fs::write_file_atomic(fs::join(dir, it.key() + ".json"), it.value().dump(1) + "\n");
    const auto& s = it.value()["summary"];
    summary[it.key()] = s;
    nlohmann::ordered_json rec = {{"event", "eval"}, {"step", step}, {"stage", stage_name}, {"label", label},
                                  {"benchmark", it.key()}, {"summary", s}};
    append_line(fs::join(cfg_.output_dir, "metrics.jsonl"), rec.dump());
    if (s.contains("score") && s["score"].is_number()) {
      tb_->scalar("eval/" + it.key(), s["score"].get<double>(), step, wall);
      sft::log::info("eval {} {}: {} {:.4f}", label, it.key(), s.value("metric", std::string("score")), s["score"].get<double>());
    }
  }
  tb_->flush();
  fs::write_file_atomic(fs::join(dir, "summary.json"), summary.dump(1) + "\n");
}

void Trainer::export_model(const std::string& dir) {
  // Streamed: one parameter at a time goes to the file, so no rank ever holds a second
  // copy of the model. Under ZeRO-3 every rank takes part in gathering one unit at a time
  // (the peak extra memory is that unit) and rank 0 writes.
  meter_->begin();
  model::SaveOptions so;
  so.dtype = cfg_.model.save_dtype == config::SaveDtype::kBf16 ? c10::kBFloat16
             : cfg_.model.save_dtype == config::SaveDtype::kF16 ? c10::kHalf
                                                                 : c10::kFloat;
  so.tokenizer_model = cfg_.tokenizer;
  const bool sharded = opt_->sharding().params;
  if (rank_ == 0) {
    std::size_t gathered = model_->num_units();  // the unit whose parameters `fetch` serves now
    std::vector<at::Tensor> unit;
    auto fetch = [&](std::size_t index) -> at::Tensor {
      if (!sharded) return model_->parameters()[index].tensor;
      const std::size_t u = opt_->layout().unit_of_param(index);
      if (u != gathered) {
        unit.clear();  // the last unit's views go first, so that one unit is held at a time
        if (gathered < model_->num_units()) dp_->release(gathered);
        unit = dp_->gather(u);
        gathered = u;
      }
      const auto ids = model_->unit_params(u);
      return unit[static_cast<std::size_t>(std::find(ids.begin(), ids.end(), index) - ids.begin())];
    };
    model::save_hf_model(model_->config(), fetch, dir, so);
    if (sharded && gathered < model_->num_units()) dp_->release(gathered);
    sft::log::info("exported {}", dir);
  } else if (sharded) {
    for (std::size_t u = 0; u < model_->num_units(); ++u) {  // rank 0's gathers, in its order
      dp_->gather(u);
      dp_->release(u);
    }
  }
  meter_->end("export");
  dist_->barrier();
}

void Trainer::report_memory(const std::string& metrics_path) {
  const std::string mine = nlohmann::json(meter_->peaks()).dump();
  const std::vector<std::string> all = dist_->distributed() ? dist_->all_gather_strings(mine) : std::vector<std::string>{mine};
  if (rank_ != 0) return;
  nlohmann::json ranks = nlohmann::json::array();
  for (const auto& r : all) ranks.push_back(nlohmann::json::parse(r));
  const nlohmann::ordered_json planned = plan_.phases_json();
  std::string table;
  for (auto it = planned.begin(); it != planned.end(); ++it) {
    std::string measured;
    for (const auto& r : ranks)
      if (r.contains(it.key())) measured += (measured.empty() ? "" : " / ") + format_bytes(r[it.key()].get<double>());
    table += "\n  " + it.key() + std::string(18 - std::min<std::size_t>(17, it.key().size()), ' ') + "planned " +
             format_bytes(it.value().get<double>()) + ", measured " + (measured.empty() ? "-" : measured);
  }
  sft::log::info("memory per rank by phase (tensor bytes above what was live before the model; {}):{}",
                 device_.is_cuda() ? "CUDA caching allocator, allocated" : "CPU tensors", table);
  append_line(metrics_path, nlohmann::json{{"event", "memory"}, {"unit", "bytes above what was live before the model"},
                                           {"planned", planned}, {"measured", ranks}}
                                .dump());
}

}  // namespace sft::train
