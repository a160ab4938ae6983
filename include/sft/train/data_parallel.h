// DataParallel: keeps the ranks' replicas or shards consistent (dist.strategy).
//
//   ddp    every rank holds everything; gradients are all-reduced in buckets during the
//          last micro-batch's backward (autograd hooks), overlapping communication with
//          the rest of the backward pass.
//   zero1  as ddp, but each rank keeps AdamW moments for its chunk of every unit only,
//          updates that chunk, and the updated chunks are all-gathered.
//   zero2  also the gradients: each unit's gradients are reduce-scattered as soon as its
//          backward is done (every micro-batch), then freed.
//   zero3  also the parameters: a unit (embedding, a layer, the head) is all-gathered for
//          its forward, released, gathered again for its backward (which recomputes it, as
//          activation checkpointing does) and its gradients are reduce-scattered.
// Every rank runs the same number of micro-batches per step (an idle rank runs an empty
// one), so collectives always match across ranks.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sft/dist/context.h"
#include "sft/model/llama.h"
#include "sft/train/optimizer.h"

namespace sft::train {

class DataParallel : public model::ParamGatherer {
 public:
  // REQUIRES: opt was built for `model` with the strategy's Sharding, world and rank.
  DataParallel(model::Llama& model, FlatAdamW& opt, std::shared_ptr<dist::Context> ctx, config::DistStrategy strategy,
               double bucket_mb);
  ~DataParallel() override;

  config::DistStrategy strategy() const { return strategy_; }
  // Before the micro-batch's forward; `last` arms the ddp/zero1 gradient buckets.
  void begin_micro(bool last);
  // After the step's last backward: every gradient reduction has completed.
  void finish_gradients();
  // After optimizer.step(): zero1/zero2 all-gather the updated chunks.
  void after_step();

  // model::ParamGatherer (zero3)
  std::vector<at::Tensor> gather(std::size_t unit) override;
  void release(std::size_t unit) override;
  void reduce_grads(std::size_t unit, const std::vector<at::Tensor>& grads) override;

 private:
  void on_grad_ready(std::size_t param);
  void reduce_unit_from_params(std::size_t unit);  // zero2

  model::Llama& model_;
  FlatAdamW& opt_;
  std::shared_ptr<dist::Context> ctx_;
  config::DistStrategy strategy_;
  // Keeps the gradient accumulators (and so their hooks) alive; type-erased because LibTorch
  // has held autograd nodes in shared_ptr (older releases) and in intrusive_ptr (2.14).
  std::vector<std::shared_ptr<void>> accumulators_;
  // ddp / zero1 buckets: [flat begin, end), pending parameter count, launched reduction
  struct Bucket {
    std::int64_t begin = 0, end = 0;
    int params = 0, pending = 0;
    bool launched = false;
    dist::Context::Pending work;
  };
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_param_;
  bool armed_ = false;
  // zero2: per unit, parameters whose gradient arrived this micro-batch
  std::vector<int> unit_pending_;
  std::vector<std::size_t> unit_of_param_;
  // zero3: gathered units
  std::map<std::size_t, at::Tensor> gathered_;
};

}  // namespace sft::train
