// The trainer's checkpoints: the run-folder lock, the resume checks, saving and restoring
// the exact training state (trainer.h).
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
#include "train/run_outputs.h"
#include "sft/train/stop_signal.h"
#include "sft/train/tfevents.h"
#include "sft/util/cuda.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"
#include "sft/util/log.h"

namespace sft::train {
namespace {

std::string hex(const at::Tensor& bytes) {
  at::Tensor b = bytes.contiguous();
  return sft::hex(b.data_ptr<std::uint8_t>(), static_cast<std::size_t>(b.numel()));
}

at::Tensor unhex(const std::string& s) {
  at::Tensor t = at::empty({static_cast<std::int64_t>(s.size() / 2)}, at::kByte);
  auto* p = t.data_ptr<std::uint8_t>();
  for (std::size_t i = 0; i + 1 < s.size(); i += 2)
    p[i / 2] = static_cast<std::uint8_t>(std::stoi(s.substr(i, 2), nullptr, 16));
  return t;
}

// A checkpoint continues only the run that wrote it: the same world size, stages, data
// streams and strategy. A difference is the user's input (ConfigError, exit code 2).
void check_same_stream(const nlohmann::json& st, const std::string& dir, int world, const data::RunData& data,
                       const std::string& strategy) {
  if (st.value("world_size", 1) != world)
    throw ConfigError(dir + ": written by " + std::to_string(st.value("world_size", 1)) +
                      " ranks, resumed on " + std::to_string(world) + "; resume on the same world size");
  if (!st.contains("stream_fingerprints") || !st["stream_fingerprints"].is_array())
    throw CheckpointError(dir + ": trainer_state.json lists no stream_fingerprints");
  const auto& fps = st["stream_fingerprints"];
  if (fps.size() != data.streams.size())
    throw ConfigError(dir + ": the run had " + std::to_string(fps.size()) + " stages, the config now has " +
                      std::to_string(data.streams.size()) +
                      "; resume with the same config, or start a new --output-dir");
  for (std::size_t s = 0; s < data.streams.size(); ++s)
    if (fps[s] != data.streams[s]->fingerprint())
      throw ConfigError(dir + ": stage " + std::to_string(s + 1) +
                        "'s data stream differs from the checkpoint's (the config, data or seed changed); "
                        "resume with the same config, or start a new --output-dir");
  if (st.value("dist_strategy", std::string("ddp")) != strategy)
    throw ConfigError(dir + ": written with dist.strategy " + st.value("dist_strategy", std::string("ddp")) +
                      ", resumed with " + strategy + "; resume with the same strategy");
}

// Rank 0 decides; its outcome is shared, so that a refused run stops every rank at once
// rather than at the next collective's timeout.
void rank0_or_refuse(dist::Context& dist, int rank, const std::function<void()>& f) {
  nlohmann::json refused = nullptr;
  if (rank == 0) {
    try {
      f();
    } catch (const Error& e) {
      if (!dist.distributed()) throw;
      refused = {{"code", e.exit_code()}, {"message", e.what()}};
    }
  }
  if (!dist.distributed()) return;
  const nlohmann::json r0 = nlohmann::json::parse(dist.all_gather_strings(refused.dump())[0]);
  if (r0.is_null()) return;
  const std::string msg = (rank == 0 ? "" : "rank 0: ") + r0["message"].get<std::string>();
  const int code = r0["code"].get<int>();
  if (code == 75) throw RunLockedError(msg);
  if (code == 2) throw ConfigError(msg);
  throw Error(msg);
}

// A run saves only finite weights and moments (a non-finite step updates nothing), so a
// non-finite value in a checkpoint whose checksums match means its files were rewritten after it
// was saved. Every rank refuses at once (each checked its own shard), not at the next collective.
void refuse_nonfinite(dist::Context& dist, int rank, const std::string& dir, const std::string& mine) {
  std::string found = mine;
  int where = rank;
  if (dist.distributed()) {
    const std::vector<std::string> all = dist.all_gather_strings(mine);
    for (std::size_t r = 0; r < all.size() && found.empty(); ++r)
      if (!all[r].empty()) found = all[r], where = static_cast<int>(r);
  }
  if (found.empty()) return;
  throw ConfigError((where == rank ? "" : "rank " + std::to_string(where) + ": ") + dir + "/" + found +
                    ": sft never saves those, so the checkpoint was altered after it was written; "
                    "delete this step folder to resume from an earlier checkpoint");
}

std::vector<std::string> outputs_to_remove(const config::RunConfig& cfg, bool resume, bool overwrite) {
  return outputs_to_replace(cfg.output_dir, cfg.to_json(),
                            !CheckpointStore(fs::join(cfg.output_dir, "checkpoints")).list().empty(), resume,
                            overwrite);
}

}  // namespace

// A folder holds one run (run_folder.h), with room for the run's end: both checked before
// anything is read or written, so that a refused run leaves the folder as it was (or
// absent). A folder in use is the lock's to report (exit code 75: sweeps skip it), later.
void check_run_folder(const config::RunConfig& cfg, bool resume, bool overwrite, dist::Context& dist,
                      int rank) {
  rank0_or_refuse(dist, rank, [&] {
    // What the run's end will need: a writable folder with room for one checkpoint of every
    // rank (fp32 or bf16 parameters and fp32 moments) and one exported model.
    const double params = static_cast<double>(resolve_run_model(cfg).config.num_parameters());
    const double pb = cfg.train.precision == config::Precision::kBf16Pure ? 2.0 : 4.0;
    const double sb = cfg.model.save_dtype == config::SaveDtype::kFp32 ? 4.0 : 2.0;
    check_room_for_outputs(cfg.output_dir, params * (pb + 8.0), params * sb);
    if (RunLock::holder(cfg.output_dir).empty()) (void)outputs_to_remove(cfg, resume, overwrite);
  });
}

// Once the input has been read and checked (datasets, tokenizer, model files): the first
// write into the folder is its lock; the folder is checked again under it.
void Trainer::lock_run_folder() {
  rank0_or_refuse(*dist_, rank_, [&] {
    lock_ = RunLock::acquire(cfg_.output_dir);
    stale_outputs_ = outputs_to_remove(cfg_, opts_.resume, opts_.overwrite);
  });
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
      const std::string old_v = a == was.end() ? "(unset)" : a->second,
                        new_v = b == now.end() ? "(unset)" : b->second;
      if (old_v == new_v) continue;
      const std::string key = prefix + k;
      if (overridable && config::resume_may_change(key)) continue;
      // A stage's settings derive from train.* (stages[1].lr from train.lr): overriding one
      // overrides what it derives.
      const auto close = key.find("].");
      const std::string derived_from = key.rfind("stages[", 0) == 0 && close != std::string::npos
                                           ? "train." + key.substr(close + 2)
                                           : std::string();
      const bool allowed =
          overridable && std::any_of(opts_.resume_overrides.begin(), opts_.resume_overrides.end(),
                                     [&](const std::string& o) {
                                       return key == o || key.rfind(o + ".", 0) == 0 ||
                                              key.rfind(o + "[", 0) == 0 || o == derived_from;
                                     });
      if (allowed) {
        accepted.push_back({{"key", key},
                            {"checkpoint", old_v},
                            {"now", new_v},
                            {"from_step", st.value("global_step", std::int64_t(0))}});
        continue;
      }
      problems.push_back(key + ": the checkpoint has " + old_v + ", this run has " + new_v);
    }
  };
  if (st.contains("model_config"))
    compare(flatten(st["model_config"]), flatten(model_config_), "model ", false);
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
    throw ConfigError(
        dir + ": this run is not the checkpoint's run:" + list +
        "\nResume with the checkpoint's settings (its config is in " +
        fs::join(cfg_.output_dir, "config.resolved.json") +
        "), or name a hyper-parameter you mean to change with --resume-override KEY (recorded), or "
        "start a new --output-dir");
  }
  // Refused here, before the run writes its build record or a TensorBoard file.
  check_same_stream(st, dir, world_, data_, config::name(cfg_.dist.strategy));
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

void Trainer::save_checkpoint(const Position& next, bool complete) {
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
  // One save at a time: the previous background save (if any) completes first.
  if (checkpoints_->async_pending()) {
    if (const std::string prev = checkpoints_->wait_async(); !prev.empty())
      sft::log::info("checkpoint {} (written in the background)", prev);
  }
  meter_->begin();
  // Nothing sharded (ddp): rank 0 holds the whole state and writes it. ZeRO: every rank
  // writes its shard; parameters once (rank 0) unless they are sharded too.
  const Sharding sh = opt_->sharding();
  const int writers = sh.moments ? world_ : 1;
  TensorFiles files;
  if (rank_ < writers) {
    std::vector<std::pair<std::string, at::Tensor>> mine;
    if (!sh.moments || sh.params || rank_ == 0) mine.push_back({"params", opt_->params()});
    mine.push_back({"exp_avg", opt_->exp_avg()});
    mine.push_back({"exp_avg_sq", opt_->exp_avg_sq()});
    files[sh.moments ? "rank" + std::to_string(rank_) + ".safetensors" : "state.safetensors"] = mine;
  }
  std::string dir;
  if (cfg_.train.async_checkpoint) {
    // A host copy of this rank's state, written while the next steps run.
    for (auto& [file, tensors] : files)
      for (auto& [name, t] : tensors) {
        at::Tensor host = at::empty(t.sizes(), t.options().device(c10::kCPU).pinned_memory(t.is_cuda()));
        host.copy_(t);
        t = host;
      }
    if (rank_ < writers)
      checkpoints_->save_async(next.global_step, rank_, writers, std::move(files), state,
                               std::chrono::seconds(cfg_.dist.timeout_s), cfg_.train.keep_checkpoints);
    dist_->barrier();  // every rank's copy is taken: the state may change again
    meter_->end("checkpoint");
    if (!complete) {
      if (rank_ == 0)
        sft::log::info("checkpoint of step {} being written in the background", next.global_step);
      return;
    }
    dir = checkpoints_->wait_async();
    dist_->barrier();  // every rank's shard is written, and rank 0 has completed the folder
    if (rank_ == 0) sft::log::info("checkpoint {}", dir);
    return;
  }
  if (!sh.moments) {
    if (rank_ == 0) dir = checkpoints_->save(next.global_step, files, state);
    dist_->barrier();
  } else {
    dir = checkpoints_->save_sharded(next.global_step, rank_, files, state, [this] { dist_->barrier(); });
  }
  meter_->end("checkpoint");
  if (rank_ == 0) {
    checkpoints_->prune(cfg_.train.keep_checkpoints);
    if (next.stage >= static_cast<int>(data_.streams.size()))
      sft::log::info("checkpoint {} (end of training)", dir);
    else
      sft::log::info("checkpoint {} (stage {}, step {} of it)", dir, next.stage + 1, next.step);
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
  if (!latest)
    throw CheckpointError("rank " + std::to_string(rank_) + ": checkpoint step " +
                          std::to_string(chosen_step) +
                          " is not visible here (the output directory must be shared by all ranks)");
  nlohmann::json st = read_trainer_state(latest->dir);
  check_same_stream(st, latest->dir, world_, data_, config::name(cfg_.dist.strategy));
  const Sharding sh = opt_->sharding();
  std::string nonfinite;  // the first loaded tensor that is not all finite, on this rank
  auto load = [&](const std::string& file, const char* name, at::Tensor& dst) {
    auto f = model::SafetensorsFile::open(fs::join(latest->dir, file));
    at::Tensor src = f->tensor(name);
    if (src.numel() != dst.numel())
      throw CheckpointError(latest->dir + "/" + file + ": " + name + " has " + std::to_string(src.numel()) +
                            " elements, this rank needs " + std::to_string(dst.numel()));
    dst.copy_(src.to(dst.device()));
    if (nonfinite.empty() && !at::isfinite(dst).all().item<bool>())
      nonfinite = file + ": " + name + " holds NaN or infinite values";
  };
  {
    at::NoGradGuard ng;
    if (!sh.moments) {
      for (const char* n : {"params", "exp_avg", "exp_avg_sq"})
        load("state.safetensors", n,
             n == std::string("params")    ? opt_->params()
             : n == std::string("exp_avg") ? opt_->exp_avg()
                                           : opt_->exp_avg_sq());
    } else {
      const std::string mine = "rank" + std::to_string(rank_) + ".safetensors";
      load(mine, "exp_avg", opt_->exp_avg());
      load(mine, "exp_avg_sq", opt_->exp_avg_sq());
      load(sh.params ? mine : "rank0.safetensors", "params", opt_->params());
    }
  }
  refuse_nonfinite(*dist_, rank_, latest->dir, nonfinite);
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
  log_->truncate_after(p.global_step);
  dist_->barrier();
  sft::log::info("resumed from {}: stage {}, step {} of it, {} steps done", latest->dir, p.stage + 1, p.step,
                 p.global_step);
  return p;
}

}  // namespace sft::train
