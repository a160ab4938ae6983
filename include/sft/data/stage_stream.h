// StageStream: the micro-batches of one training stage, for every epoch, rank and step.
//
// Deterministic: (stage selection, seed, stage index, batching settings, world size) fix
// every micro-batch, so the whole stage is planned up front. That gives exact step counts
// for the LR schedule and makes resuming O(1): the stream's state is just (stage, step).
//
// An epoch is added after the stage's `epochs` while the stage has fewer than min_steps
// optimizer steps (train.min_steps).
//
// Per epoch the stage's trainable samples (its sources' records minus zero-target and
// too-long ones) are shuffled with seed (run seed, stage, epoch), then
//   pack     best-fit-decreasing into rows of max_seq_len within windows of pack_window
//            samples; samples never attend to each other (see Batch)
//   pad      one sample per row, padded to the longest row of the micro-batch
//            (group_by_length sorts windows of 64 micro-batches by length first)
//   pad_max  one sample per row, padded to max_seq_len (FastChat's behaviour)
// and cut into micro-batches of batch_size rows. Optimizer step s consumes micro-batches
// [s*W*A, (s+1)*W*A) of the stage (W ranks, A accumulation steps); rank r takes
// s*W*A + m*W + r for m < A, so ranks never overlap and together cover the stage.
//
// With samples_per_step S > 0 the global batch is counted in samples instead, as a padded
// trainer (FastChat) counts it: each epoch's shuffled samples are cut into steps of S (the
// last step of an epoch may have fewer), so the step count and the LR schedule are a padded
// trainer's whatever the batching. A step's samples become rows (packed best-fit-decreasing
// into max_seq_len, or one per row), the rows are dealt to ranks longest first to the least
// loaded (by tokens), and each rank cuts its rows, longest first, into micro-batches of at
// most tokens_per_micro_batch padded tokens (rows x width; one row at least). The step's
// accumulation count A_s is the largest number of micro-batches of any rank; a rank with
// fewer gets nullptr for the rest (and runs an empty micro-batch). Packing then changes
// the speed, not the optimisation: the same samples meet in the same step.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sft/config/run_config.h"
#include "sft/data/strategy.h"
#include "sft/data/tokenized_dataset.h"

namespace sft::data {

struct SampleRef {
  std::int32_t dataset;  // index into the run's datasets
  std::int64_t record;   // index into that dataset's good records
};

struct Row {
  std::vector<SampleRef> samples;
  std::int64_t tokens = 0;
  std::int64_t trained_tokens = 0;  // TokenizedDataset::trained_tokens() summed: the loss's terms
};

struct MicroBatch {
  std::vector<Row> rows;
  std::int64_t width = 0;   // padded sequence length T
  std::int64_t tokens = 0;  // non-pad tokens
  std::int64_t trained_tokens = 0;
  int epoch = 0;
};

// The most padded tokens (rows x width) of a micro-batch when the global batch is counted in
// samples: train.tokens_per_micro_batch, or batch_size rows of max_seq_len when that is 0.
std::int64_t micro_batch_token_budget(std::int64_t tokens_per_micro_batch, std::int64_t batch_size,
                                      std::int64_t max_seq_len);
inline std::int64_t micro_batch_token_budget(const config::RunConfig& cfg) {
  return micro_batch_token_budget(cfg.train.tokens_per_micro_batch, cfg.train.batch_size,
                                  cfg.data.max_seq_len);
}
// Optimizer steps that take `units` (an epoch's samples with samples_per_step, else the
// stage's micro-batches or rows), `per_step` a step; the last step may be short.
std::int64_t step_count(std::int64_t units, std::int64_t per_step);

class StageStream {
 public:
  using Datasets = std::vector<std::shared_ptr<const TokenizedDataset>>;

  // batch_size: rows per micro-batch (train.batch_size); rows_accumulation: micro-batches
  // each rank runs per optimizer step when the batch is counted in rows (data::rows_accumulation());
  // samples_per_step > 0 counts it in samples instead (train.samples_per_step), in
  // micro-batches of at most micro_batch_token_budget() padded tokens.
  StageStream(const StageSelection& stage, int stage_index, const DataPlan& plan, const Datasets& datasets,
              const config::DataSpec& data, std::int64_t batch_size, std::int64_t rows_accumulation,
              int world_size, std::uint64_t seed, int epochs, std::int64_t samples_per_step = 0,
              std::int64_t tokens_per_micro_batch = 0, std::int64_t min_steps = 0);

  std::int64_t steps() const { return steps_; }
  // Passes over the stage's samples: `epochs`, or more where min_steps needed them.
  int epochs() const { return epochs_; }
  // Micro-batches each rank runs in `step` (rows_accumulation, or A_s with samples_per_step).
  std::int64_t accumulation(std::int64_t step) const;
  std::int64_t step_samples(std::int64_t step) const;            // over all ranks and micro-batches
  std::int64_t micro_batches() const { return micro_batches_; }  // non-empty ones
  int world_size() const { return world_; }
  // nullptr when the stage's last step has fewer micro-batches than W*A.
  const MicroBatch* micro_batch(std::int64_t step, int rank, std::int64_t micro) const;
  std::int64_t step_trained_tokens(std::int64_t step) const;  // over all ranks and micro-batches
  std::int64_t step_tokens(std::int64_t step) const;
  int epoch_at(std::int64_t step) const;
  std::int64_t samples_per_epoch() const { return samples_per_epoch_; }
  std::int64_t tokens() const { return tokens_; }                  // non-pad tokens, all epochs
  std::int64_t padded_tokens() const { return padded_; }           // rows x width, all epochs
  std::int64_t trained_tokens() const { return trained_tokens_; }  // all epochs
  double packing_efficiency() const { return padded_ ? double(tokens_) / double(padded_) : 1.0; }
  // A hash of every micro-batch's contents: a checkpoint refuses to resume on a different stream.
  const std::string& fingerprint() const { return fingerprint_; }
  // Every sample of the stage (all epochs) in stream order, for manifests and coverage tests.
  std::vector<SampleRef> all_samples() const;

 private:
  void cut_row_steps();  // row batching: W x rows_accumulation micro-batches a step
  void count_steps();    // the stage's and each step's totals
  std::vector<MicroBatch> micro_;
  std::vector<std::int64_t> step_begin_, step_accumulation_;  // per step: its first micro-batch, A_s
  std::vector<std::int64_t> step_trained_tokens_, step_tokens_, step_samples_;
  std::int64_t micro_batches_ = 0;
  std::int64_t steps_ = 0, micro_batches_per_step_ = 1, samples_per_epoch_ = 0, tokens_ = 0, padded_ = 0,
               trained_tokens_ = 0;
  int world_ = 1, epochs_ = 0;
  std::int64_t rows_accumulation_ = 1;
  std::string fingerprint_;
};

}  // namespace sft::data
