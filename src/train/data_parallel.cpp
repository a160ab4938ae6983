#include "sft/train/data_parallel.h"

#include <ATen/ATen.h>
#include <c10/core/StorageImpl.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>

#include "sft/util/error.h"

namespace sft::train {

using config::DistStrategy;

DataParallelOptions DataParallelOptions::from(const config::RunConfig& cfg) {
  DataParallelOptions o;
  o.strategy = cfg.dist.strategy;
  o.bucket_mb = cfg.dist.bucket_mb;
  o.prefetch = cfg.dist.prefetch;
  const bool autocast = cfg.train.precision == config::Precision::kBf16;
  const bool pure = cfg.train.precision == config::Precision::kBf16Pure;
  o.gather_dtype = pure || (autocast && cfg.dist.gather_dtype == config::GatherDtype::kAuto) ? c10::kBFloat16
                                                                                             : c10::kFloat;
  o.reduce_dtype = cfg.dist.reduce_dtype == config::ReduceDtype::kBf16 ? c10::kBFloat16 : c10::kFloat;
  o.reduce_inflight = cfg.dist.reduce_inflight;
  return o;
}

// A ddp / zero1 bucket: a range of the flat gradients covering consecutive parameters (in
// backward order), all-reduced once the last of them has its gradient.
struct DataParallel::Bucket {
  std::int64_t begin = 0, end = 0;
  int params = 0, pending = 0;
  bool launched = false;
  at::Tensor staging;  // reduce_dtype differs from the gradients': the range converted
  dist::Context::Work work;
};

// A unit's gradient being reduce-scattered into `out`, added to this rank's chunk when waited.
struct DataParallel::Reduction {
  std::size_t unit = 0;
  at::Tensor out;
  dist::Context::Work work;
};

// A ZeRO-3 unit: one tensor holding its parameters back to back (what the model splits into
// views), whose storage is allocated for a gather and freed on release; `data` aliases it
// outside autograd, so that filling it does not count as modifying what the graph saved.
struct DataParallel::Unit {
  at::Tensor leaf, data;
  enum class State { kFree, kInFlight, kReady } state = State::kFree;
  dist::Context::Work work;
  c10::ScalarType dtype = c10::kFloat;
};

namespace {

void set_storage_bytes(const at::Tensor& t, std::size_t bytes) {
  c10::StorageImpl* s = t.storage().unsafeGetStorageImpl();
  s->set_data_ptr_noswap(s->allocator()->allocate(bytes));
  s->set_nbytes(bytes);
}

template <class F>
void add_grad_hook(const at::Tensor& leaf, std::vector<std::shared_ptr<void>>& keep, F&& on_ready) {
  auto acc = torch::autograd::impl::grad_accumulator(leaf);
  acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
      [f = std::forward<F>(on_ready)](const torch::autograd::variable_list& outputs,
                                      const torch::autograd::variable_list&) {
        f();
        return outputs;
      }));
  keep.push_back(std::make_shared<decltype(acc)>(std::move(acc)));
}

}  // namespace

DataParallel::DataParallel(model::Llama& model, FlatAdamW& opt, std::shared_ptr<dist::Context> ctx,
                           DataParallelOptions o)
    : model_(model), opt_(opt), ctx_(std::move(ctx)), o_(o) {
  const auto& layout = opt_.layout();
  const auto& params = model_.parameters();
  unit_of_param_.assign(params.size(), 0);
  for (std::size_t u = 0; u < layout.units.size(); ++u)
    for (std::size_t s : layout.units[u].slots) unit_of_param_[layout.slots[s].param] = u;

  if (o_.strategy == DistStrategy::kZero3) {
    // bf16-pure keeps bf16 masters: every unit is gathered in bf16 as it is stored.
    const c10::ScalarType master = opt_.params().scalar_type();
    for (std::size_t u = 0; u < layout.units.size(); ++u) {
      auto unit = std::make_unique<Unit>();
      unit->dtype = u == 0 ? master : o_.gather_dtype;  // the embedding's lookup reads a few rows
      at::Tensor t = at::empty({0}, opt_.params().options().dtype(unit->dtype));
      t.unsafeGetTensorImpl()->set_sizes_contiguous({layout.units[u].padded});  // no storage until gathered
      unit->leaf = t.requires_grad_(true);
      unit->data = unit->leaf.variable_data();
      add_grad_hook(unit->leaf, accumulators_, [this, u] {
        at::Tensor& g = units_[u]->leaf.mutable_grad();
        at::Tensor grad = g;
        g.reset();
        reduce_async(u, grad);
      });
      units_.push_back(std::move(unit));
    }
    if (o_.gather_dtype != master)
      shard_compute_ = at::empty_like(opt_.params(), opt_.params().options().dtype(o_.gather_dtype));
    model_.set_gatherer(this);
    return;
  }
  bucket_of_param_.assign(params.size(), -1);
  if (o_.strategy == DistStrategy::kDdp || o_.strategy == DistStrategy::kZero1) build_buckets();
  unit_pending_.assign(layout.units.size(), 0);
  if (!ctx_->distributed()) return;
  // Hooks on each parameter's gradient accumulator fire once its gradient is complete.
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (!params[i].tensor.defined() || !params[i].tensor.requires_grad()) continue;
    add_grad_hook(params[i].tensor, accumulators_, [this, i] { on_grad_ready(i); });
  }
}

DataParallel::~DataParallel() {
  for (auto& r : reductions_) r->work = dist::Context::Work();  // waited: a collective is never abandoned
  if (o_.strategy == DistStrategy::kZero3) model_.set_gatherer(nullptr);
}

// Parameters in backward order (the head first, each layer's down_proj before its q_proj),
// grouped into ranges of the flat gradients of at most bucket_mb (a larger parameter makes
// a bucket of its own). A range spans units, and their padding, which holds zeros.
void DataParallel::build_buckets() {
  const auto& layout = opt_.layout();
  const double cap = o_.bucket_mb * 1024 * 1024 / static_cast<double>(opt_.grads().element_size());
  std::vector<std::size_t> slots(layout.slots.size());
  for (std::size_t s = 0; s < slots.size(); ++s) slots[s] = s;
  std::sort(slots.begin(), slots.end(),
            [&](std::size_t a, std::size_t b) { return layout.slots[a].offset > layout.slots[b].offset; });
  std::int64_t top = layout.total;  // the range above the last bucket's begin (padding included)
  for (std::size_t s : slots) {
    const auto& slot = layout.slots[s];
    if (buckets_.empty() || static_cast<double>(buckets_.back()->end - buckets_.back()->begin) >= cap) {
      auto b = std::make_unique<Bucket>();
      b->end = top;
      buckets_.push_back(std::move(b));
    }
    buckets_.back()->begin = slot.offset;
    top = slot.offset;
    ++buckets_.back()->params;
    bucket_of_param_[slot.param] = static_cast<int>(buckets_.size()) - 1;
  }
  if (!buckets_.empty()) buckets_.back()->begin = 0;
}

void DataParallel::begin_step() {
  if (shard_compute_.defined()) shard_compute_.copy_(opt_.params());
}

void DataParallel::begin_micro(bool last) {
  armed_ = last;
  for (auto& b : buckets_) {
    b->pending = b->params;
    b->launched = false;
  }
  for (std::size_t u = 0; u < unit_pending_.size(); ++u)
    unit_pending_[u] = static_cast<int>(opt_.layout().units[u].slots.size());
  if (o_.strategy == DistStrategy::kZero3) {
    // This micro-batch's order of use: the forward (the embedding again when it is the
    // tied head), then the backward's gathers (the layers from the last; the head and the
    // embedding are not gathered again).
    const std::size_t L = units_.size() - 2;
    order_.clear();
    for (std::size_t u = 0; u <= L + 1; ++u) order_.push_back(u);
    if (model_.config().tie_word_embeddings) order_.push_back(0);
    for (std::size_t u = L; u >= 1; --u) order_.push_back(u);
    cursor_ = 0;
  }
}

// ---- ddp / zero1 / zero2: hooks on each parameter --------------------------------------------

void DataParallel::on_grad_ready(std::size_t param) {
  if (o_.strategy == DistStrategy::kZero2) {
    const std::size_t u = unit_of_param_[param];
    if (--unit_pending_[u] == 0) reduce_zero2_unit(u);
    return;
  }
  if (!armed_) return;  // gradients keep accumulating until the step's last micro-batch
  Bucket& b = *buckets_[static_cast<std::size_t>(bucket_of_param_[param])];
  if (--b.pending == 0 && !b.launched) launch_bucket(b);
}

void DataParallel::launch_bucket(Bucket& b) {
  at::Tensor range = opt_.grads().narrow(0, b.begin, b.end - b.begin);
  if (range.scalar_type() != o_.reduce_dtype) {
    b.staging = range.to(o_.reduce_dtype);
    b.work = ctx_->all_reduce_sum_async(b.staging);
  } else {
    b.work = ctx_->all_reduce_sum_async(range);
  }
  b.launched = true;
}

void DataParallel::reduce_zero2_unit(std::size_t u) {
  // The unit's fresh gradients go into one padded buffer (only the padding is zeroed), whose
  // reduction is launched; the per-parameter gradients are freed at once.
  const auto& layout = opt_.layout();
  const auto& unit = layout.units[u];
  at::Tensor flat = at::empty({unit.padded}, opt_.grads().options().dtype(o_.reduce_dtype));
  if (unit.padded > unit.numel) flat.narrow(0, unit.numel, unit.padded - unit.numel).zero_();
  for (std::size_t s : unit.slots) {
    const auto& slot = layout.slots[s];
    at::Tensor& g = const_cast<at::Tensor&>(model_.parameters()[slot.param].tensor).mutable_grad();
    if (g.defined())
      flat.narrow(0, slot.offset - unit.offset, slot.numel).copy_(g.reshape({-1}));
    else
      flat.narrow(0, slot.offset - unit.offset, slot.numel).zero_();
    g.reset();
  }
  reduce_async(u, flat);
}

// ---- zero2 / zero3: reductions in flight ----------------------------------------------------

void DataParallel::reduce_async(std::size_t u, at::Tensor grad) {
  if (grad.scalar_type() != o_.reduce_dtype) grad = grad.to(o_.reduce_dtype);
  auto r = std::make_unique<Reduction>();
  r->unit = u;
  r->out = at::empty({opt_.layout().chunk(u)}, grad.options());
  r->work = ctx_->reduce_scatter_sum_async(r->out, grad);
  reductions_.push_back(std::move(r));
  while (static_cast<int>(reductions_.size()) > std::max(1, o_.reduce_inflight)) finish_oldest_reduction();
}

void DataParallel::finish_oldest_reduction() {
  Reduction& r = *reductions_.front();
  r.work.wait();
  opt_.grad_chunk(r.unit).add_(r.out);
  reductions_.pop_front();
}

void DataParallel::finish_gradients() {
  while (!reductions_.empty()) finish_oldest_reduction();
  if (!ctx_->distributed() || buckets_.empty()) return;
  // Buckets whose hooks did not fire (none normally) are reduced now, in the same order on every rank.
  for (auto& b : buckets_)
    if (!b->launched) launch_bucket(*b);
  for (auto& b : buckets_) {
    b->work.wait();
    if (b->staging.defined()) {
      opt_.grads().narrow(0, b->begin, b->end - b->begin).copy_(b->staging);
      b->staging.reset();
    }
  }
  armed_ = false;
}

void DataParallel::after_step() {
  if (!ctx_->distributed() || o_.strategy == DistStrategy::kDdp || o_.strategy == DistStrategy::kZero3)
    return;
  // Every unit's updated chunk, gathered in place into the full parameters: all launched,
  // then waited.
  std::vector<dist::Context::Work> works;
  for (std::size_t u = 0; u < opt_.layout().units.size(); ++u)
    works.push_back(ctx_->all_gather_async(opt_.param_unit(u), opt_.param_chunk(u)));
  for (auto& w : works) w.wait();
}

std::vector<at::Tensor> DataParallel::gather_master(std::size_t unit) {
  const auto& layout = opt_.layout();
  const auto& u = layout.units[unit];
  at::Tensor full = at::empty({u.padded}, opt_.params().options());
  ctx_->all_gather(full, opt_.param_chunk(unit));
  std::vector<at::Tensor> out;
  for (std::size_t s : u.slots) {
    const auto& slot = layout.slots[s];
    out.push_back(full.narrow(0, slot.offset - u.offset, slot.numel).view(slot.shape));
  }
  return out;
}

// ---- zero3: gathers -------------------------------------------------------------------------

void DataParallel::launch_gather(std::size_t u) {
  Unit& unit = *units_[u];
  set_storage_bytes(unit.leaf, static_cast<std::size_t>(unit.leaf.numel()) * unit.leaf.element_size());
  at::Tensor mine = opt_.param_chunk(u);
  if (unit.dtype != mine.scalar_type()) {
    const std::int64_t at = mine.storage_offset() - opt_.params().storage_offset();
    mine = shard_compute_.narrow(0, at, mine.numel());
  }
  unit.work = ctx_->all_gather_async(unit.data, mine);
  unit.state = Unit::State::kInFlight;
}

void DataParallel::wait_gathered(std::size_t u) {
  Unit& unit = *units_[u];
  if (unit.state == Unit::State::kFree) launch_gather(u);
  if (unit.state == Unit::State::kInFlight) unit.work.wait();
  unit.state = Unit::State::kReady;
}

std::size_t DataParallel::advance_to(std::size_t u) {
  for (std::size_t p = cursor_; p < order_.size(); ++p)
    if (order_[p] == u) {
      cursor_ = p + 1;
      return p;
    }
  return order_.size();  // outside the order (a forward without begin_micro): no prefetch
}

// Launches the gathers of the next dist.prefetch units of the order that are not there yet:
// they run while the caller computes with the unit at `position`. The backward's part of
// the order counts only when a backward will follow.
void DataParallel::prefetch_after(std::size_t position) {
  if (position >= order_.size()) return;
  const std::size_t forward_end = order_.size() - (units_.size() - 2);
  const std::size_t end = at::GradMode::is_enabled() || position >= forward_end ? order_.size() : forward_end;
  for (std::size_t p = position + 1;
       p < std::min(end, position + 1 + static_cast<std::size_t>(std::max(0, o_.prefetch))); ++p)
    if (units_[order_[p]]->state == Unit::State::kFree) launch_gather(order_[p]);
}

at::Tensor DataParallel::gather(std::size_t u) {
  const std::size_t position = advance_to(u);
  if (units_[u]->state == Unit::State::kFree) launch_gather(u);
  prefetch_after(position);  // launched before this unit is waited: both may be in flight
  wait_gathered(u);
  return units_[u]->leaf;
}

void DataParallel::regather(std::size_t u) { gather(u); }

void DataParallel::release(std::size_t u) {
  Unit& unit = *units_[u];
  if (unit.state == Unit::State::kFree) return;
  if (unit.state == Unit::State::kInFlight) unit.work.wait();  // never free what a collective still writes
  set_storage_bytes(unit.leaf, 0);
  unit.state = Unit::State::kFree;
}

}  // namespace sft::train
