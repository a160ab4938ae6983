#include "sft/train/data_parallel.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "sft/util/error.h"

namespace sft::train {

DataParallel::DataParallel(model::Llama& model, FlatAdamW& opt, std::shared_ptr<dist::Context> ctx,
                           config::DistStrategy strategy, double bucket_mb)
    : model_(model), opt_(opt), ctx_(std::move(ctx)), strategy_(strategy) {
  const auto& layout = opt_.layout();
  const auto& params = model_.parameters();
  unit_of_param_.assign(params.size(), 0);
  for (std::size_t u = 0; u < layout.units.size(); ++u)
    for (std::size_t s : layout.units[u].slots) unit_of_param_[layout.slots[s].param] = u;

  if (strategy_ == config::DistStrategy::kZero3) {
    model_.set_gatherer(this);
    return;
  }
  // Hooks on each parameter's gradient accumulator fire once its gradient is complete.
  bucket_of_param_.assign(params.size(), -1);
  if (strategy_ == config::DistStrategy::kDdp || strategy_ == config::DistStrategy::kZero1) {
    // Buckets of whole units, filled in backward order (head first) up to bucket_mb.
    const double cap = bucket_mb * 1024 * 1024 / 4;
    for (std::size_t u = layout.units.size(); u-- > 0;) {
      const auto& unit = layout.units[u];
      if (buckets_.empty() || static_cast<double>(buckets_.back().end - buckets_.back().begin) >= cap) {
        Bucket b;
        b.begin = unit.offset;
        b.end = unit.offset + unit.padded;
        buckets_.push_back(b);
      }
      else
        buckets_.back().begin = unit.offset;  // units are contiguous and visited in descending order
      for (std::size_t s : unit.slots) {
        bucket_of_param_[layout.slots[s].param] = static_cast<int>(buckets_.size()) - 1;
        ++buckets_.back().params;
      }
    }
  }
  unit_pending_.assign(layout.units.size(), 0);
  if (!ctx_->distributed()) return;
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (!params[i].tensor.defined() || !params[i].tensor.requires_grad()) continue;
    auto acc = torch::autograd::impl::grad_accumulator(params[i].tensor);
    acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          on_grad_ready(i);
          return outputs;
        }));
    accumulators_.push_back(std::make_shared<decltype(acc)>(std::move(acc)));
  }
}

DataParallel::~DataParallel() {
  if (strategy_ == config::DistStrategy::kZero3) model_.set_gatherer(nullptr);
}

void DataParallel::begin_micro(bool last) {
  armed_ = last;
  for (auto& b : buckets_) {
    b.pending = b.params;
    b.launched = false;
  }
  for (std::size_t u = 0; u < unit_pending_.size(); ++u)
    unit_pending_[u] = static_cast<int>(opt_.layout().units[u].slots.size());
}

void DataParallel::on_grad_ready(std::size_t param) {
  if (strategy_ == config::DistStrategy::kZero2) {
    const std::size_t u = unit_of_param_[param];
    if (--unit_pending_[u] == 0) reduce_unit_from_params(u);
    return;
  }
  if (!armed_) return;  // gradients keep accumulating until the step's last micro-batch
  Bucket& b = buckets_[static_cast<std::size_t>(bucket_of_param_[param])];
  if (--b.pending == 0 && !b.launched) {
    b.work = ctx_->all_reduce_sum_async(opt_.grads().narrow(0, b.begin, b.end - b.begin));
    b.launched = true;
  }
}

void DataParallel::reduce_unit_from_params(std::size_t u) {
  // Copy the unit's fresh gradients into one padded buffer, reduce-scatter it into this
  // rank's chunk, accumulate, and free the per-parameter gradients.
  const auto& unit = opt_.layout().units[u];
  const auto& layout = opt_.layout();
  std::vector<at::Tensor> grads;
  for (std::size_t s : unit.slots) {
    const auto& slot = layout.slots[s];
    grads.push_back(model_.parameters()[slot.param].tensor.grad());
  }
  reduce_grads(u, grads);
  for (std::size_t s : unit.slots) {
    const auto& p = model_.parameters()[layout.slots[s].param].tensor;
    const_cast<at::Tensor&>(p).mutable_grad().reset();
  }
}

void DataParallel::reduce_grads(std::size_t u, const std::vector<at::Tensor>& grads) {
  const auto& layout = opt_.layout();
  const auto& unit = layout.units[u];
  TORCH_CHECK(grads.size() == unit.slots.size(), "reduce_grads: unit ", u, " expects ", unit.slots.size(), " gradients");
  at::Tensor staging = at::zeros({unit.padded}, opt_.grads().options());
  for (std::size_t k = 0; k < grads.size(); ++k) {
    const auto& slot = layout.slots[unit.slots[k]];
    if (grads[k].defined()) staging.narrow(0, slot.offset - unit.offset, slot.numel).copy_(grads[k].reshape({-1}));
  }
  at::Tensor mine = at::empty({layout.chunk(u)}, staging.options());
  ctx_->reduce_scatter_sum(mine, staging);
  opt_.grad_chunk(u).add_(mine);
}

void DataParallel::finish_gradients() {
  if (!ctx_->distributed() || strategy_ == config::DistStrategy::kZero2 || strategy_ == config::DistStrategy::kZero3) return;
  // Buckets whose hooks did not fire (none normally) are reduced now, in the same order on every rank.
  for (auto& b : buckets_) {
    if (!b.launched) {
      b.work = ctx_->all_reduce_sum_async(opt_.grads().narrow(0, b.begin, b.end - b.begin));
      b.launched = true;
    }
  }
  for (auto& b : buckets_) b.work.wait();
  armed_ = false;
}

void DataParallel::after_step() {
  if (!ctx_->distributed() || strategy_ == config::DistStrategy::kDdp || strategy_ == config::DistStrategy::kZero3) return;
  for (std::size_t u = 0; u < opt_.layout().units.size(); ++u) {
    at::Tensor full = opt_.param_unit(u);
    ctx_->all_gather(full, opt_.param_chunk(u).clone());
  }
}

std::vector<at::Tensor> DataParallel::gather(std::size_t unit) {
  const auto& layout = opt_.layout();
  const auto& u = layout.units[unit];
  at::Tensor full = at::empty({u.padded}, opt_.params().options());
  ctx_->all_gather(full, opt_.param_chunk(unit));
  gathered_[unit] = full;
  std::vector<at::Tensor> out;
  for (std::size_t s : u.slots) {
    const auto& slot = layout.slots[s];
    out.push_back(full.narrow(0, slot.offset - u.offset, slot.numel).view(slot.shape));
  }
  return out;
}

void DataParallel::release(std::size_t unit) { gathered_.erase(unit); }

}  // namespace sft::train
