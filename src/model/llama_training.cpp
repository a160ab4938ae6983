// Training Llama: the loss (loss_sum, head_loss and the fused linear cross-entropy), the
// autograd Function of activation checkpointing (run_layer), whose backward recomputes
// the layer, and ZeRO-3's forward over gathered units, whose two markers tell the
// gatherer when a unit's backward starts (gather it again) and ends (release it).
#include "sft/model/llama.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/generated/variable_factories.h>

#include "sft/model/fused.h"
#include "sft/model/precision.h"

namespace sft::model {

namespace {

// The forward's autocast state, for a backward that recomputes: the recompute runs under
// it (resume_autocast), so that it rounds as the forward did.
void save_autocast(torch::autograd::AutogradContext* ctx, const at::Tensor& like) {
  const auto type = like.is_cuda() ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
  ctx->saved_data["autocast"] = autocast_enabled(type);
  ctx->saved_data["autocast_dtype"] = static_cast<std::int64_t>(autocast_dtype(type));
}

AutocastGuard resume_autocast(torch::autograd::AutogradContext* ctx, c10::Device device) {
  return AutocastGuard(device, static_cast<c10::ScalarType>(ctx->saved_data["autocast_dtype"].toInt()),
                       ctx->saved_data["autocast"].toBool());
}

}  // namespace

// Activation checkpointing for one decoder layer: the forward keeps only the layer's
// input; the backward recomputes the layer (under the autocast state of the forward) and
// differentiates it. Weights are inputs of the function so their gradients flow out.
struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::Tensor x,
                                                at::Tensor cos, at::Tensor sin,
                                                std::optional<at::Tensor> attention_mask_opt,
                                                at::TensorList weights, const Llama* model,
                                                std::int64_t layer, std::int64_t present) {
    at::Tensor attention_mask = attention_mask_opt ? *attention_mask_opt : at::Tensor();
    std::vector<at::Tensor> w(weights.begin(), weights.end());
    save_state(ctx, model, layer, x);
    ctx->saved_data["present"] = present;
    std::vector<at::Tensor> saved = {x, cos, sin, attention_mask.defined() ? attention_mask : at::Tensor()};
    saved.insert(saved.end(), w.begin(), w.end());
    ctx->save_for_backward(saved);
    return {model->layer_forward(static_cast<std::size_t>(layer), x, cos, sin, attention_mask, nullptr,
                                 as_layer(w, present))};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    std::vector<at::Tensor> w;
    for (std::size_t i = 4; i < saved.size(); ++i)
      w.push_back(saved[i].detach().requires_grad_(saved[i].requires_grad()));
    auto g = recompute(ctx, saved, w, grads[0]);
    // One entry per forward argument: x, cos, sin, attention_mask, each weight, model, layer, present.
    torch::autograd::variable_list result = {g[0], at::Tensor(), at::Tensor(), at::Tensor()};
    std::size_t gi = 1;
    for (const auto& t : w) result.push_back(t.requires_grad() ? g[gi++] : at::Tensor());
    result.insert(result.end(), 3, at::Tensor());
    return result;
  }

  // A layer's weights go in as the defined slots of LayerWeights::list() only (autograd
  // cannot take undefined tensors as inputs), with `present` marking which slots they fill.
  static std::pair<std::vector<at::Tensor>, std::int64_t> compact(const LayerWeights& lw) {
    std::vector<at::Tensor> w;
    std::int64_t present = 0;
    const std::vector<at::Tensor> slots = lw.list();
    for (std::size_t i = 0; i < slots.size(); ++i)
      if (slots[i].defined()) {
        w.push_back(slots[i]);
        present |= std::int64_t{1} << i;
      }
    return {std::move(w), present};
  }
  static LayerWeights as_layer(const std::vector<at::Tensor>& w, std::int64_t present) {
    std::vector<at::Tensor> slots(LayerWeights().list().size());
    std::size_t next = 0;
    for (std::size_t i = 0; i < slots.size(); ++i)
      if (present & (std::int64_t{1} << i)) slots[i] = w.at(next++);
    return LayerWeights::from_list(slots);
  }

  // What recompute() needs besides the saved tensors: the model, the layer, and the
  // forward's autocast state (taken from x's device type).
  static void save_state(torch::autograd::AutogradContext* ctx, const Llama* model, std::int64_t layer,
                         const at::Tensor& x) {
    ctx->saved_data["model"] = reinterpret_cast<std::int64_t>(model);
    ctx->saved_data["layer"] = layer;
    save_autocast(ctx, x);
  }

  // The backward of a decoder layer by recomputation: reruns the layer that save_state()
  // recorded on a leaf copy of its input
  // (saved: x, cos, sin, attention_mask) with the weights `w`, under the forward's autocast state, and
  // differentiates it against `grad`. Returns the gradient of x, then those of the weights
  // in `w` that require grad, in their order.
  static torch::autograd::variable_list recompute(torch::autograd::AutogradContext* ctx,
                                                  const torch::autograd::variable_list& saved,
                                                  const std::vector<at::Tensor>& w, const at::Tensor& grad) {
    const auto* model = reinterpret_cast<const Llama*>(ctx->saved_data["model"].toInt());
    const auto layer = ctx->saved_data["layer"].toInt();
    at::Tensor x = saved[0].detach().requires_grad_(true);
    at::Tensor out;
    {
      at::AutoGradMode enable(true);
      AutocastGuard autocast = resume_autocast(ctx, x.device());
      out = model->layer_forward(static_cast<std::size_t>(layer), x, saved[1], saved[2], saved[3], nullptr,
                                 as_layer(w, ctx->saved_data["present"].toInt()));
    }
    std::vector<at::Tensor> inputs = {x};
    for (const auto& t : w)
      if (t.requires_grad()) inputs.push_back(t);
    return torch::autograd::grad({out}, inputs, {grad});
  }
};

// ---- ZeRO-3: the markers around a unit ------------------------------------------------

// Identity forward; its backward runs when the gradient of a unit's output arrives, before
// the unit's own backward: the gatherer fills the unit's storage again.
struct GatherInBackward : public torch::autograd::Function<GatherInBackward> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::Tensor x, const Llama* model,
                            std::int64_t unit) {
    ctx->saved_data["model"] = reinterpret_cast<std::int64_t>(model);
    ctx->saved_data["unit"] = unit;
    return x;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto* model = reinterpret_cast<const Llama*>(ctx->saved_data["model"].toInt());
    model->gatherer_->regather(static_cast<std::size_t>(ctx->saved_data["unit"].toInt()));
    return {grads[0], at::Tensor(), at::Tensor()};
  }
};

// Identity forward on a unit's input; its backward runs once the gradient of that input is
// complete, that is after every node of the unit's backward: its weights can go.
struct ReleaseInBackward : public torch::autograd::Function<ReleaseInBackward> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::Tensor x, const Llama* model,
                            std::int64_t unit, std::int64_t also) {
    ctx->saved_data["model"] = reinterpret_cast<std::int64_t>(model);
    ctx->saved_data["unit"] = unit;
    ctx->saved_data["also"] = also;  // -1: none (the embedding, for a tied head)
    return x;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto* model = reinterpret_cast<const Llama*>(ctx->saved_data["model"].toInt());
    model->gatherer_->release(static_cast<std::size_t>(ctx->saved_data["unit"].toInt()));
    if (const auto also = ctx->saved_data["also"].toInt(); also >= 0)
      model->gatherer_->release(static_cast<std::size_t>(also));
    return {grads[0], at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Summed cross-entropy of lm_head(h) against labels, fused: the (N, V) logits exist one
// chunk of rows at a time, and the gradients are computed in the same pass (softmax minus
// one-hot, then the two GEMMs) and handed out by backward(). Nothing of size N x V
// outlives a chunk: no fp32 copy of all logits, no log_softmax output, no one-hot scatter.
// GEMMs run in h's dtype (bf16 under autocast), softmax statistics in fp32.
struct FusedLinearCrossEntropy : public torch::autograd::Function<FusedLinearCrossEntropy> {
  static constexpr std::int64_t kChunkElements = std::int64_t(1)
                                                 << 23;  // rows x vocab per chunk (32 MiB fp32)

  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::Tensor h,
                                                at::Tensor w, at::Tensor labels) {
    const std::int64_t N = h.size(0), V = w.size(0);
    const at::ScalarType dt = h.scalar_type();
    at::Tensor wc = w.to(dt);
    const bool need_grad = h.requires_grad() || w.requires_grad();
    at::Tensor grad_h = need_grad ? at::empty_like(h) : at::Tensor();
    at::Tensor grad_w = need_grad && w.requires_grad()
                            ? at::zeros({V, w.size(1)}, w.options().dtype(at::kFloat))
                            : at::Tensor();
    at::Tensor loss = at::zeros({}, h.options().dtype(at::kFloat));
    const std::int64_t rows = std::max<std::int64_t>(1, kChunkElements / std::max<std::int64_t>(V, 1));
    for (std::int64_t r = 0; r < N; r += rows) {
      const std::int64_t n = std::min(rows, N - r);
      at::Tensor hc = h.narrow(0, r, n);
      at::Tensor yc = labels.narrow(0, r, n).unsqueeze(1);
      at::Tensor logp = at::_log_softmax(at::mm(hc, wc.t()).to(at::kFloat), 1, false);  // (n, V), fp32
      loss -= logp.gather(1, yc).sum();
      if (!need_grad) continue;
      // d loss / d logits = softmax - onehot, computed in place over the chunk.
      at::Tensor p = logp.exp_();
      p.scatter_add_(1, yc, at::full_like(yc, -1.0, p.options()));
      at::Tensor pc = p.to(dt);
      grad_h.narrow(0, r, n).copy_(at::mm(pc, wc));
      if (grad_w.defined()) grad_w.add_(at::mm(pc.t(), hc));
    }
    ctx->save_for_backward({grad_h, grad_w});
    return {loss};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    at::Tensor g = grads[0];
    at::Tensor gh = saved[0].defined() ? saved[0] * g.to(saved[0].scalar_type()) : at::Tensor();
    at::Tensor gw = saved[1].defined() ? saved[1] * g : at::Tensor();
    return {gh, gw, at::Tensor()};
  }
};

at::Tensor Llama::head_loss(const at::Tensor& residual, const at::Tensor& labels,
                            const at::Tensor& trained_positions, const at::Tensor& norm_w,
                            const at::Tensor& head_w) const {
  at::Tensor flat_labels = labels.reshape({-1});
  // (N) trained positions; their count is known on the host when they come with the batch.
  at::Tensor idx =
      trained_positions.defined() ? trained_positions : (flat_labels != kIgnoreIndex).nonzero().squeeze(1);
  at::Tensor x = residual.reshape({-1, residual.size(-1)});
  if (idx.numel() == 0) return (x.sum() * 0.0 + norm_w.sum() * 0.0 + head_w.sum() * 0.0).to(at::kFloat);
  // Under autocast the GEMMs run in bf16, as at::linear would; softmax statistics in fp32.
  const auto type = x.is_cuda() ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
  const auto out = autocast_enabled(type) ? autocast_dtype(type) : at::result_type(x, norm_w);
  const at::Tensor nw = norm_w.scalar_type() == x.scalar_type() ? norm_w : norm_w.to(x.scalar_type());
  at::Tensor h = fused_rms_norm(x.index_select(0, idx), nw, cfg_.rms_norm_eps, out);  // (N, D)
  return FusedLinearCrossEntropy::apply(h, head_w, flat_labels.index_select(0, idx))[0];
}

at::Tensor Llama::loss_sum(const at::Tensor& input_ids, const at::Tensor& position_ids,
                           const at::Tensor& attention_mask, const at::Tensor& labels,
                           const at::Tensor& trained_positions) const {
  if (gatherer_) return sharded_loss_sum(input_ids, position_ids, attention_mask, labels, trained_positions);
  // The final norm is per position, so norming only the trained rows is exact.
  at::Tensor x = at::embedding(params_[embed_index_].tensor, input_ids);
  auto [cos, sin] = rope(position_ids, input_ids.size(-1));  // positions < T in training rows
  for (std::size_t l = 0; l < layers_.size(); ++l)
    x = run_layer(l, x, cos, sin, attention_mask, own_layer_weights(l));
  return head_loss(x, labels, trained_positions, params_[norm_index_].tensor, params_[lm_head_index_].tensor);
}

// ZeRO-3: each unit gathered for its forward. The embedding's backward needs no weights
// (a scatter of the gradient rows), so it is released at once; a layer is released after
// its forward and gathered again by GatherInBackward; the head, last in the forward and
// first in the backward, stays until ReleaseInBackward. The gatherer prefetches the next
// units of either pass as each is asked for.
at::Tensor Llama::sharded_loss_sum(const at::Tensor& input_ids, const at::Tensor& position_ids,
                                   const at::Tensor& attention_mask, const at::Tensor& labels,
                                   const at::Tensor& trained_positions) const {
  const bool grad = at::GradMode::is_enabled();
  const std::size_t head = num_units() - 1;
  at::Tensor x = at::embedding(unit_views(0, gatherer_->gather(0))[0], input_ids);
  gatherer_->release(0);
  auto [cos, sin] = rope(position_ids, input_ids.size(-1));  // positions < T in training rows
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    const auto unit = static_cast<std::int64_t>(l + 1);
    const LayerWeights w = layer_views(l, gatherer_->gather(l + 1));
    if (grad) x = ReleaseInBackward::apply(x, this, unit, -1);
    x = run_layer(l, x, cos, sin, attention_mask, w);
    if (grad) x = GatherInBackward::apply(x, this, unit);
    gatherer_->release(l + 1);
  }
  const std::vector<at::Tensor> hw = unit_views(head, gatherer_->gather(head));
  const at::Tensor lm = cfg_.tie_word_embeddings ? unit_views(0, gatherer_->gather(0))[0] : hw[1];
  if (grad)
    x = ReleaseInBackward::apply(x, this, static_cast<std::int64_t>(head), cfg_.tie_word_embeddings ? 0 : -1);
  at::Tensor loss = head_loss(x, labels, trained_positions, hw[0], lm);
  if (!grad) {
    gatherer_->release(head);
    if (cfg_.tie_word_embeddings) gatherer_->release(0);
  }
  return loss;
}

at::Tensor Llama::run_layer(std::size_t l, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                            const at::Tensor& attention_mask, const LayerWeights& w) const {
  if (!(checkpointing_ && at::GradMode::is_enabled()))
    return layer_forward(l, x, cos, sin, attention_mask, nullptr, w);
  const auto [ws, present] = CheckpointedLayer::compact(w);
  const std::optional<at::Tensor> maybe_attention_mask =
      attention_mask.defined() ? std::optional<at::Tensor>(attention_mask) : std::nullopt;
  return CheckpointedLayer::apply(x, cos, sin, maybe_attention_mask, at::TensorList(ws), this,
                                  static_cast<std::int64_t>(l), present)[0];
}

}  // namespace sft::model
