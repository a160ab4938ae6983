// Trainer: runs a resolved RunConfig's stages, one after another.
//
// One trainer per run folder: rank 0 locks output_dir for the trainer's lifetime (another
// process gets RunLockedError, exit code 75), and every rank checks at rendezvous that all
// run the same config, data and model (rank_agreement.h) before anything is written.
//
// Owns the model, the flat AdamW state, the run's data (every stage's stream planned up
// front) and its checkpoints. Rank 0 logs, writes metrics (run_log.h) and exports models;
// under ZeRO every rank writes its own shard of each checkpoint.
//
// fit() reads top to bottom: restore the newest checkpoint (when resuming), then per stage
// run_stage() — each step (train_step: forward and backward over the step's micro-batches,
// gradients reduced, clipped, one AdamW update; its figures stay on the device), then what
// is due once in a while (figures read back and logged, a checkpoint, a stop) — and
// end_stage() (export, evaluation, checkpoint); end_run() exports and evaluates the final
// model.
//
// Resuming is exact: a checkpoint holds the flat parameters and moments, the optimizer
// step count, the position (stage, step) in the planned streams and the counters, so a
// run killed at any point and resumed from its newest good checkpoint produces the same
// weights, bit for bit on CPU, as an uninterrupted run.
#pragma once

#include <chrono>
#include <functional>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include "sft/config/run_config.h"
#include "sft/dist/context.h"
#include "sft/model/llama.h"
#include "sft/train/checkpoint.h"
#include "sft/train/memory_plan.h"
#include "sft/train/optimizer.h"
#include "sft/data/run_data.h"
#include "sft/util/error.h"
#include "sft/util/cuda.h"
#include "sft/util/run_lock.h"

namespace sft::train {

class RunLog;
class DataParallel;
class PhaseMeter;
class TraceRecorder;

// How the ranks share an evaluation: every rank calls the hook; `all_gather` hands every
// rank each rank's string, in rank order (the process group's store).
struct EvalShare {
  int rank = 0, world = 1;
  c10::Device device{c10::kCPU};  // this rank's (its own GPU under a launcher)
  std::function<std::vector<std::string>(const std::string&)> all_gather;
};
// Evaluates an exported model folder, returning {benchmark: results} where each result has
// a "summary" with a "score" (the eval module's format). Set by the CLI, so that train does
// not depend on eval; called on every rank (each generates its share of the batches), and
// rank 0's results are the ones written.
using EvalHook = std::function<nlohmann::ordered_json(const std::string& model_dir, const EvalShare& share)>;

struct TrainerOptions {
  bool resume = false;  // --resume auto: continue from the newest good checkpoint
  // --resume-override KEY: settings a resumed run may change from the checkpoint's (e.g.
  // train.lr); each change is recorded in config.resolved.json ("resume_overrides").
  std::vector<std::string> resume_overrides;
  std::string resume_command;  // printed on a graceful stop: this very command, with --resume auto
  bool overwrite = false;      // --overwrite: replace an earlier run's outputs in the folder (run_folder.h)
  // Fault injection for tests (`sft train --inject-nonfinite 3,4`, hidden): these global steps
  // report a NaN loss, to exercise the skip-and-count and abort-after-N paths.
  std::vector<std::int64_t> inject_nonfinite;
  // --profile-steps A:B: a trace of global steps A..B (train/trace.h), written by every rank
  // to <output_dir>/profile/steps_A-B.rank<R>.trace.json. 0: none.
  std::int64_t profile_first = 0, profile_last = 0;
  EvalHook evaluate;  // used when the config's eval block asks for it
};

struct TrainResult {
  std::int64_t steps = 0;  // global steps completed
  std::vector<double> stage_first_loss, stage_last_loss;
  std::int64_t skipped_steps = 0;
  std::string final_dir;               // the exported final model (a stop throws StoppedBySignal)
  std::int64_t peak_memory_bytes = 0;  // tensor bytes: CPU tracker, or CUDA allocator's allocated peak
};

// Thrown out of fit() after a graceful stop, once the checkpoint is safely written.
class StoppedBySignal : public Error {
 public:
  StoppedBySignal(const std::string& msg, int sig) : Error(msg), sig_(sig) {}
  int exit_code() const override { return 128 + sig_; }

 private:
  int sig_;
};

class Trainer {
 public:
  Trainer(config::RunConfig cfg, TrainerOptions opts);
  ~Trainer();
  TrainResult fit();

  const model::Llama& model() const { return *model_; }
  const data::RunData& data() const { return data_; }
  int rank() const { return rank_; }
  int world() const { return world_; }

 private:
  // The constructor's build phases, in order (each may throw; nothing is written to the run
  // folder before prepare_output_folder).
  void join_ranks();             // device, process group; run folder and config agreed by all ranks
  void load_data();              // every stage's stream (rank 0 tokenizes into the cache first)
  void check_stages_train();     // each stage trains something, at a learning rate above 0
  void build_model();            // model, optimizer (filled from the weights or the init), memory plan
  void prepare_output_folder();  // the lock, checkpoints/, an earlier attempt's outputs removed
  void open_run_log(const nlohmann::json& overrides);  // metrics, trace; rank 0: the run's records

  struct Position {
    int stage = 0;
    std::int64_t step = 0;         // next step to run within the stage
    std::int64_t global_step = 0;  // steps completed
  };
  // A step's figures as train_step leaves them: on the device, so that no step waits for
  // the GPU. They are read back once per logged step (and before a checkpoint), all at once.
  struct StepStats {
    at::Tensor loss;                              // fp64, mean per trained token
    at::Tensor grad_norm;                         // fp64, before clipping
    at::Tensor skipped;                           // bool: a non-finite loss or norm, so nothing was updated
    std::int64_t tokens = 0, trained_tokens = 0;  // over all ranks, from the stream's plan
  };

  struct Pending {  // a step whose figures are still on the device
    StepStats st;
    int stage;
    std::int64_t step, global_step;
  };

  bool run_stage(int stage, std::int64_t first, Position& pos);
  void read_back(bool log_last);
  void end_stage(int stage, bool ran, Position& pos);
  TrainResult end_run(const Position& pos);
  StoppedBySignal stopped_after(const Position& pos) const;
  int num_stages() const { return static_cast<int>(data_.streams.size()); }
  const data::StageStream& stream(int s) const { return *data_.streams[static_cast<std::size_t>(s)]; }
  std::int64_t total_steps() const;  // this run's, train.max_steps included

  Position restore();
  // `complete`: an asynchronous save (train.async_checkpoint) is waited for before returning.
  void save_checkpoint(const Position& next, bool complete = false);
  StepStats train_step(int stage, std::int64_t step, std::int64_t global_step);
  void export_model(const std::string& dir);
  void lock_run_folder();
  // Before anything is written: a resumed run must be the checkpoint's run (the same model
  // config and tensor shapes, the same hyper-parameters but for --resume-override keys).
  // Returns the overridden settings, to record.
  nlohmann::json check_resume();
  std::string tensor_fingerprint() const;
  void log_settings() const;
  void log_plan() const;
  // Every rank's peak bytes per phase next to the planner's, as a "memory" line in
  // metrics.jsonl and in the log.
  void report_memory();
  // Runs the eval hook on `model_dir`, writes <output_dir>/eval/<label>/ and metrics lines.
  void run_eval(const std::string& model_dir, const std::string& label, int stage, std::int64_t step);
  double stage_lr(int stage, std::int64_t step) const;
  bool stop_requested();  // SIGTERM/SIGINT on any rank, agreed by all
  void save_trace();      // --profile-steps: the recording so far, once its work is done

  config::RunConfig cfg_;
  TrainerOptions opts_;
  c10::Device device_;
  std::unique_ptr<RunLock> lock_;  // rank 0's, on output_dir, for the trainer's lifetime
  std::shared_ptr<dist::Context> dist_;
  std::unique_ptr<DataParallel> dp_;
  int rank_ = 0, world_ = 1;
  data::RunData data_;
  std::unique_ptr<model::Llama> model_;  // released before the final evaluation (final/ holds it)
  std::unique_ptr<PhaseMeter> meter_;
  cuda::HostRead stop_vote_;  // the last step's all-reduced stop requests, on their way to the host
  MemoryPlan plan_;           // the dry-run planner's, for this run on this world size
  std::unique_ptr<FlatAdamW> opt_;
  std::unique_ptr<CheckpointStore> checkpoints_;
  std::unique_ptr<RunLog> log_;
  std::unique_ptr<TraceRecorder> trace_;
  std::vector<Pending> pending_;
  TrainResult result_;  // the stages' losses, as they end
  std::int32_t pad_id_ = 0;
  nlohmann::json model_config_;             // config.json merged with model.config, as checkpoints record it
  std::vector<std::string> stale_outputs_;  // rank 0: an earlier attempt's outputs to remove (run_folder.h)
  std::int64_t consecutive_nonfinite_ = 0, skipped_total_ = 0;
  std::int64_t state_bytes_ = 0, build_peak_bytes_ = 0;  // this rank's, from building the model
};

// Resolves train.device by the rule of train/device_rule.h (cuda: GPU LOCAL_RANK; a fixed
// cuda:N refused under several ranks per node unless it is the rank's own) and
// train.threads; sets LibTorch's intra-op thread count and the current CUDA device.
c10::Device setup_device(const config::TrainSpec& t, const dist::LaunchInfo& launch = {});

}  // namespace sft::train
