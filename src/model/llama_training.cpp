// Training Llama: the loss (loss_sum, head_loss and the fused linear cross-entropy), and
// the autograd Functions that keep less in memory: activation checkpointing of a decoder
// layer (run_layer), whose backward recomputes the layer, and ZeRO-3's units, whose
// parameters are gathered for the forward and again for a backward that needs them (the
// layers' and the head's, which recompute). Both kinds of decoder layer share one
// recompute (CheckpointedLayer::recompute).
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

std::vector<at::Tensor> leaf_copies(const std::vector<at::Tensor>& w) {
  std::vector<at::Tensor> out;
  for (const auto& t : w) out.push_back(t.detach().requires_grad_(true));
  return out;
}

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
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::Tensor x, at::Tensor cos,
                                                at::Tensor sin, std::optional<at::Tensor> mask_opt, at::TensorList weights,
                                                const Llama* model, std::int64_t layer) {
    at::Tensor mask = mask_opt ? *mask_opt : at::Tensor();
    std::vector<at::Tensor> w(weights.begin(), weights.end());
    save_state(ctx, model, layer, x);
    std::vector<at::Tensor> saved = {x, cos, sin, mask.defined() ? mask : at::Tensor()};
    saved.insert(saved.end(), w.begin(), w.end());
    ctx->save_for_backward(saved);
    return {model->layer_forward(static_cast<std::size_t>(layer), x, cos, sin, mask, nullptr, &w)};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    std::vector<at::Tensor> w;
    for (std::size_t i = 4; i < saved.size(); ++i) w.push_back(saved[i].detach().requires_grad_(saved[i].requires_grad()));
    auto g = recompute(ctx, saved, w, grads[0]);
    // One entry per forward argument: x, cos, sin, mask, each weight, model, layer.
    torch::autograd::variable_list result = {g[0], at::Tensor(), at::Tensor(), at::Tensor()};
    std::size_t gi = 1;
    for (const auto& t : w) result.push_back(t.requires_grad() ? g[gi++] : at::Tensor());
    result.push_back(at::Tensor());
    result.push_back(at::Tensor());
    return result;
  }

  // What recompute() needs besides the saved tensors: the model, the layer, and the
  // forward's autocast state (taken from x's device type).
  static void save_state(torch::autograd::AutogradContext* ctx, const Llama* model, std::int64_t layer,
                         const at::Tensor& x) {
    ctx->saved_data["model"] = reinterpret_cast<std::int64_t>(model);
    ctx->saved_data["layer"] = layer;
    save_autocast(ctx, x);
  }

  // The backward of a decoder layer by recomputation, for this Function and for ZeRO-3's
  // ShardedLayer: reruns the layer that save_state() recorded on a leaf copy of its input
  // (saved: x, cos, sin, mask) with the weights `w`, under the forward's autocast state, and
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
      out = model->layer_forward(static_cast<std::size_t>(layer), x, saved[1], saved[2], saved[3], nullptr, &w);
    }
    std::vector<at::Tensor> inputs = {x};
    for (const auto& t : w)
      if (t.requires_grad()) inputs.push_back(t);
    return torch::autograd::grad({out}, inputs, {grad});
  }
};

// ---- ZeRO-3: units gathered for their forward, gathered again and recomputed in backward ----

// Embedding lookup; its weight gradient is the scatter-add of the output gradient.
struct ShardedEmbedding : public torch::autograd::Function<ShardedEmbedding> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::Tensor ids,
                                                at::Tensor anchor, const Llama* model) {
    auto w = model->gatherer_->gather(0);
    at::Tensor out = at::embedding(w[0], ids);
    model->gatherer_->release(0);
    ctx->saved_data["model"] = reinterpret_cast<std::int64_t>(model);
    ctx->save_for_backward({ids});
    return {out};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto* model = reinterpret_cast<const Llama*>(ctx->saved_data["model"].toInt());
    at::Tensor ids = ctx->get_saved_variables()[0];
    at::Tensor g = at::embedding_dense_backward(grads[0].to(at::kFloat), ids, model->cfg_.vocab_size,
                                                /*padding_idx=*/-1, /*scale_grad_by_freq=*/false);
    model->gatherer_->reduce_grads(0, {g});
    return {at::Tensor(), at::zeros({}, grads[0].options().dtype(at::kFloat)), at::Tensor()};
  }
};

// A decoder layer whose weights are gathered for the forward and again for the backward,
// which is activation checkpointing's (CheckpointedLayer::recompute) with the gathered
// weights; their gradients go to the owning ranks.
struct ShardedLayer : public torch::autograd::Function<ShardedLayer> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::Tensor x, at::Tensor cos,
                                                at::Tensor sin, std::optional<at::Tensor> mask_opt, const Llama* model,
                                                std::int64_t layer) {
    at::Tensor mask = mask_opt ? *mask_opt : at::Tensor();
    const auto unit = static_cast<std::size_t>(layer) + 1;
    auto w = model->gatherer_->gather(unit);
    at::Tensor out = model->layer_forward(static_cast<std::size_t>(layer), x, cos, sin, mask, nullptr, &w);
    model->gatherer_->release(unit);
    CheckpointedLayer::save_state(ctx, model, layer, x);
    ctx->save_for_backward({x, cos, sin, mask});
    return {out};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto* model = reinterpret_cast<const Llama*>(ctx->saved_data["model"].toInt());
    const auto unit = static_cast<std::size_t>(ctx->saved_data["layer"].toInt()) + 1;
    std::vector<at::Tensor> w = leaf_copies(model->gatherer_->gather(unit));
    auto g = CheckpointedLayer::recompute(ctx, saved, w, grads[0]);
    model->gatherer_->reduce_grads(unit, std::vector<at::Tensor>(g.begin() + 1, g.end()));
    model->gatherer_->release(unit);
    return {g[0], at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Final norm + lm_head on the trained positions + summed cross-entropy.
struct ShardedHead : public torch::autograd::Function<ShardedHead> {
  static std::pair<std::vector<at::Tensor>, at::Tensor> weights(const Llama* model) {
    const std::size_t head = model->num_units() - 1;
    auto w = model->gatherer_->gather(head);
    at::Tensor lm = model->cfg_.tie_word_embeddings ? model->gatherer_->gather(0)[0] : w[1];
    return {w, lm};
  }
  static void release(const Llama* model) {
    model->gatherer_->release(model->num_units() - 1);
    if (model->cfg_.tie_word_embeddings) model->gatherer_->release(0);
  }
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::Tensor x, at::Tensor labels,
                                                const Llama* model) {
    auto [w, lm] = weights(model);
    at::Tensor loss = model->head_loss(x, labels, w[0], lm);
    release(model);
    ctx->saved_data["model"] = reinterpret_cast<std::int64_t>(model);
    save_autocast(ctx, x);
    ctx->save_for_backward({x, labels});
    return {loss};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto* model = reinterpret_cast<const Llama*>(ctx->saved_data["model"].toInt());
    auto [w0, lm0] = weights(model);
    at::Tensor norm_w = w0[0].detach().requires_grad_(true);
    at::Tensor lm = lm0.detach().requires_grad_(true);
    at::Tensor x = saved[0].detach().requires_grad_(true);
    at::Tensor loss;
    {
      at::AutoGradMode enable(true);
      AutocastGuard autocast = resume_autocast(ctx, x.device());
      loss = model->head_loss(x, saved[1], norm_w, lm);
    }
    auto g = torch::autograd::grad({loss}, {x, norm_w, lm}, {grads[0]});
    const std::size_t head = model->num_units() - 1;
    if (model->cfg_.tie_word_embeddings) {
      model->gatherer_->reduce_grads(head, {g[1]});
      model->gatherer_->reduce_grads(0, {g[2]});
    } else {
      model->gatherer_->reduce_grads(head, {g[1], g[2]});
    }
    release(model);
    return {g[0], at::Tensor(), at::Tensor()};
  }
};

// Summed cross-entropy of lm_head(h) against labels, fused: the (N, V) logits exist one
// chunk of rows at a time, and the gradients are computed in the same pass (softmax minus
// one-hot, then the two GEMMs) and handed out by backward(). Nothing of size N x V
// outlives a chunk: no fp32 copy of all logits, no log_softmax output, no one-hot scatter.
// GEMMs run in h's dtype (bf16 under autocast), softmax statistics in fp32.
struct FusedLinearCrossEntropy : public torch::autograd::Function<FusedLinearCrossEntropy> {
  static constexpr std::int64_t kChunkElements = std::int64_t(1) << 23;  // rows x vocab per chunk (32 MiB fp32)

  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::Tensor h, at::Tensor w,
                                                at::Tensor labels) {
    const std::int64_t N = h.size(0), V = w.size(0);
    const at::ScalarType dt = h.scalar_type();
    at::Tensor wc = w.to(dt);
    const bool need_grad = h.requires_grad() || w.requires_grad();
    at::Tensor grad_h = need_grad ? at::empty_like(h) : at::Tensor();
    at::Tensor grad_w = need_grad && w.requires_grad() ? at::zeros({V, w.size(1)}, w.options().dtype(at::kFloat)) : at::Tensor();
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

at::Tensor Llama::head_loss(const at::Tensor& residual, const at::Tensor& labels, const at::Tensor& norm_w,
                            const at::Tensor& head_w) const {
  at::Tensor flat_labels = labels.reshape({-1});
  at::Tensor idx = (flat_labels != kIgnoreIndex).nonzero().squeeze(1);  // (N) trained positions
  at::Tensor x = residual.reshape({-1, residual.size(-1)});
  if (idx.numel() == 0) return (x.sum() * 0.0 + norm_w.sum() * 0.0 + head_w.sum() * 0.0).to(at::kFloat);
  // Under autocast the GEMMs run in bf16, as at::linear would; softmax statistics in fp32.
  const auto type = x.is_cuda() ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
  const auto out = autocast_enabled(type) ? autocast_dtype(type) : at::result_type(x, norm_w);
  at::Tensor h = fused_rms_norm(x.index_select(0, idx), norm_w, cfg_.rms_norm_eps, out);  // (N, D)
  return FusedLinearCrossEntropy::apply(h, head_w, flat_labels.index_select(0, idx))[0];
}

at::Tensor Llama::loss_sum(const at::Tensor& input_ids, const at::Tensor& position_ids, const at::Tensor& mask,
                           const at::Tensor& labels) const {
  if (!gatherer_) {
    // The final norm is per position, so norming only the trained rows is exact.
    at::Tensor x = at::embedding(params_[embed_index_].tensor, input_ids);
    auto [cos, sin] = rope(position_ids, input_ids.size(-1));  // positions < T in training rows
    for (std::size_t l = 0; l < layers_.size(); ++l) x = run_layer(l, x, cos, sin, mask);
    return head_loss(x, labels, params_[norm_index_].tensor, params_[lm_head_index_].tensor);
  }
  at::Tensor x = ShardedEmbedding::apply(input_ids, anchor_, this)[0];
  auto [cos, sin] = rope(position_ids, input_ids.size(-1));  // positions < T in training rows
  const std::optional<at::Tensor> maybe_mask = mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt;
  for (std::size_t l = 0; l < layers_.size(); ++l)
    x = ShardedLayer::apply(x, cos, sin, maybe_mask, this, static_cast<std::int64_t>(l))[0];
  return ShardedHead::apply(x, labels, this)[0];
}

at::Tensor Llama::run_layer(std::size_t l, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                            const at::Tensor& mask) const {
  if (!(checkpointing_ && at::GradMode::is_enabled())) return layer_forward(l, x, cos, sin, mask, nullptr, nullptr);
  std::vector<at::Tensor> w;
  for (std::size_t idx : unit_params(l + 1)) w.push_back(params_[idx].tensor);
  const std::optional<at::Tensor> maybe_mask = mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt;
  return CheckpointedLayer::apply(x, cos, sin, maybe_mask, at::TensorList(w), this, static_cast<std::int64_t>(l))[0];
}

}  // namespace sft::model
