// DataParallel: keeps the ranks' replicas or shards consistent (dist.strategy), with the
// communication overlapped with compute wherever the order of the work allows.
//
//   ddp    every rank holds everything; gradients are all-reduced in buckets of
//          dist.bucket_mb (parameters in backward order, across layers) during the last
//          micro-batch's backward (autograd hooks), each launched as soon as its last
//          gradient is ready and waited before the optimizer step.
//   zero1  as ddp, but each rank keeps AdamW moments for its chunk of every unit only,
//          updates that chunk, and the updated chunks are all-gathered.
//   zero2  also the gradients: each unit's gradients are reduce-scattered as soon as its
//          backward is done (every micro-batch), then freed.
//   zero3  also the parameters: a unit (embedding, a layer, the head) is all-gathered for
//          its forward and again for its backward, into one buffer whose storage is freed
//          in between. Gathers move the compute dtype (a bf16 copy of this rank's shard
//          under bf16 autocast, refreshed each step; the embedding, whose lookup reads a
//          few rows, in the master dtype). dist.prefetch units ahead are gathered while the
//          current one computes (the next layers in the forward, the previous ones in the
//          backward). A unit's gradient (one flat tensor, the backward of the split into
//          its parameters) is reduce-scattered in dist.reduce_dtype as soon as it is
//          complete, and added to this rank's chunk when the reduction is waited: before
//          the optimizer step, or when dist.reduce_inflight reductions are in flight.
// Every rank runs the same number of micro-batches per step (an idle rank runs an empty
// one), so collectives are launched in the same order on every rank.
#pragma once

#include <ATen/core/Tensor.h>

#include <deque>
#include <memory>
#include <vector>

#include "sft/dist/context.h"
#include "sft/model/llama.h"
#include "sft/train/optimizer.h"

namespace sft::train {

struct DataParallelOptions {
  config::DistStrategy strategy = config::DistStrategy::kDdp;
  double bucket_mb = 25.0;                     // ddp / zero1 all-reduce buckets
  int prefetch = 1;                            // zero3: units gathered ahead (0: when used)
  c10::ScalarType gather_dtype = c10::kFloat;  // zero3: what layers and the head are gathered in
  c10::ScalarType reduce_dtype = c10::kFloat;  // what gradients are summed in across ranks
  int reduce_inflight = 2;                     // zero2/3: reductions in flight before the oldest is waited
  static DataParallelOptions from(const config::RunConfig& cfg);
};

class DataParallel : public model::ParamGatherer {
 public:
  // REQUIRES: opt was built for `model` with the strategy's Sharding, world and rank.
  DataParallel(model::Llama& model, FlatAdamW& opt, std::shared_ptr<dist::Context> ctx,
               DataParallelOptions o);
  ~DataParallel() override;

  config::DistStrategy strategy() const { return o_.strategy; }
  // Before a step's first micro-batch: zero3 refreshes its compute-dtype copy of the shard.
  void begin_step();
  // Before the micro-batch's forward; `last` arms the ddp/zero1 gradient buckets.
  void begin_micro(bool last);
  // After the step's last backward: every gradient reduction has completed.
  void finish_gradients();
  // After optimizer.step(): zero1/zero2 all-gather the updated chunks.
  void after_step();
  // A unit's parameters in the master dtype (exact: for export), in unit_params() order,
  // gathered into a buffer of their own that lives as long as the returned views.
  // Collective: every rank calls it for the same units in the same order.
  std::vector<at::Tensor> gather_master(std::size_t unit);

  // model::ParamGatherer (zero3)
  at::Tensor gather(std::size_t unit) override;
  void release(std::size_t unit) override;
  void regather(std::size_t unit) override;

 private:
  struct Unit;
  struct Bucket;
  struct Reduction;
  void build_buckets();
  void on_grad_ready(std::size_t param);  // ddp/zero1/zero2: a parameter's gradient is complete
  void launch_bucket(Bucket& b);
  void reduce_zero2_unit(std::size_t unit);
  // zero2/3: starts reducing `grad` (the unit's padded flat gradient) into this rank's chunk.
  void reduce_async(std::size_t unit, at::Tensor grad);
  void finish_oldest_reduction();
  // zero3
  void launch_gather(std::size_t unit);
  void wait_gathered(std::size_t unit);
  void prefetch_after(std::size_t position);
  std::size_t advance_to(std::size_t unit);  // the unit's position in this micro-batch's order

  model::Llama& model_;
  FlatAdamW& opt_;
  std::shared_ptr<dist::Context> ctx_;
  DataParallelOptions o_;
  // Keeps the gradient accumulators (and so their hooks) alive; type-erased because LibTorch
  // has held autograd nodes in shared_ptr (older releases) and in intrusive_ptr (2.14).
  std::vector<std::shared_ptr<void>> accumulators_;
  std::vector<std::size_t> unit_of_param_;
  // ddp / zero1
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<int> bucket_of_param_;
  bool armed_ = false;
  // zero2: per unit, parameters whose gradient has not arrived this micro-batch
  std::vector<int> unit_pending_;
  // zero2 / zero3: reductions in flight, oldest first
  std::deque<std::unique_ptr<Reduction>> reductions_;
  // zero3
  std::vector<std::unique_ptr<Unit>> units_;
  at::Tensor shard_compute_;        // this rank's chunks in the gather dtype (when it differs)
  std::vector<std::size_t> order_;  // a micro-batch's use of units: the forward, then the backward's gathers
  std::size_t cursor_ = 0;          // the next position in order_
};

}  // namespace sft::train
