#include "sft/model/llama.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/generated/variable_factories.h>

#include <cmath>

#include "sft/model/fused.h"
#include "sft/model/precision.h"
#include "sft/model/varlen.h"
#include "sft/util/error.h"

namespace sft::model {

namespace {

// inv_freq in fp32 as HF computes it, with llama3 / linear rope_scaling applied.
at::Tensor inverse_frequencies(const LlamaConfig& c) {
  at::Tensor exponents = at::arange(0, c.head_dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(c.head_dim);
  at::Tensor inv = 1.0 / at::pow(at::scalar_tensor(c.rope_theta, at::kFloat), exponents);
  if (!c.rope_scaling) return inv;
  const RopeScaling& s = *c.rope_scaling;
  if (s.type == "linear") return inv / s.factor;
  // llama3 (HF _compute_llama3_parameters): keep high frequencies, divide low ones by
  // `factor`, interpolate smoothly in between.
  const double old_len = static_cast<double>(s.original_max_position_embeddings);
  const double low_wavelen = old_len / s.low_freq_factor;
  const double high_wavelen = old_len / s.high_freq_factor;
  at::Tensor wavelen = 2 * M_PI / inv;
  at::Tensor scaled = at::where(wavelen > low_wavelen, inv / s.factor, inv);
  at::Tensor smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  at::Tensor smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
  at::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
  return at::where(medium, smoothed, scaled);
}

at::Tensor repeat_kv(const at::Tensor& x, std::int64_t n_rep) {
  if (n_rep == 1) return x;
  auto s = x.sizes();  // (B, K, T, Dh) -> (B, K*n_rep, T, Dh); kv head j serves query heads j*n_rep..
  return x.unsqueeze(2).expand({s[0], s[1], n_rep, s[2], s[3]}).reshape({s[0], s[1] * n_rep, s[2], s[3]});
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
    ctx->saved_data["model"] = reinterpret_cast<std::int64_t>(model);
    ctx->saved_data["layer"] = layer;
    const bool cuda = x.is_cuda();
    ctx->saved_data["autocast"] = autocast_enabled(cuda ? c10::DeviceType::CUDA : c10::DeviceType::CPU);
    ctx->saved_data["autocast_dtype"] =
        static_cast<std::int64_t>(autocast_dtype(cuda ? c10::DeviceType::CUDA : c10::DeviceType::CPU));
    std::vector<at::Tensor> saved = {x, cos, sin, mask.defined() ? mask : at::Tensor()};
    saved.insert(saved.end(), w.begin(), w.end());
    ctx->save_for_backward(saved);
    return {model->layer_forward(static_cast<std::size_t>(layer), x, cos, sin, mask, nullptr, &w)};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto* model = reinterpret_cast<const Llama*>(ctx->saved_data["model"].toInt());
    const auto layer = ctx->saved_data["layer"].toInt();
    at::Tensor x = saved[0].detach().requires_grad_(true);
    std::vector<at::Tensor> w;
    for (std::size_t i = 4; i < saved.size(); ++i) w.push_back(saved[i].detach().requires_grad_(saved[i].requires_grad()));
    at::Tensor out;
    {
      at::AutoGradMode enable(true);
      AutocastGuard autocast(x.device(), static_cast<c10::ScalarType>(ctx->saved_data["autocast_dtype"].toInt()),
                             ctx->saved_data["autocast"].toBool());
      out = model->layer_forward(static_cast<std::size_t>(layer), x, saved[1], saved[2], saved[3], nullptr, &w);
    }
    std::vector<at::Tensor> inputs = {x};
    for (const auto& t : w)
      if (t.requires_grad()) inputs.push_back(t);
    auto g = torch::autograd::grad({out}, inputs, {grads[0]});
    // One entry per forward argument: x, cos, sin, mask, each weight, model, layer.
    torch::autograd::variable_list result = {g[0], at::Tensor(), at::Tensor(), at::Tensor()};
    std::size_t gi = 1;
    for (const auto& t : w) result.push_back(t.requires_grad() ? g[gi++] : at::Tensor());
    result.push_back(at::Tensor());
    result.push_back(at::Tensor());
    return result;
  }
};

std::vector<std::pair<std::string, std::vector<std::int64_t>>> expected_parameters(const LlamaConfig& cfg) {
  const std::int64_t D = cfg.hidden_size, F = cfg.intermediate_size, Dh = cfg.head_dim;
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> out;
  out.push_back({"model.embed_tokens.weight", {cfg.vocab_size, D}});
  for (std::int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", {D}});
    out.push_back({p + "self_attn.q_proj.weight", {cfg.num_attention_heads * Dh, D}});
    out.push_back({p + "self_attn.k_proj.weight", {cfg.num_key_value_heads * Dh, D}});
    out.push_back({p + "self_attn.v_proj.weight", {cfg.num_key_value_heads * Dh, D}});
    out.push_back({p + "self_attn.o_proj.weight", {D, cfg.num_attention_heads * Dh}});
    out.push_back({p + "post_attention_layernorm.weight", {D}});
    out.push_back({p + "mlp.gate_proj.weight", {F, D}});
    out.push_back({p + "mlp.up_proj.weight", {F, D}});
    out.push_back({p + "mlp.down_proj.weight", {D, F}});
  }
  out.push_back({"model.norm.weight", {D}});
  if (!cfg.tie_word_embeddings) out.push_back({"lm_head.weight", {cfg.vocab_size, D}});
  return out;
}

// ---- ZeRO-3: units gathered for their forward, gathered again and recomputed in backward ----

namespace {

std::vector<at::Tensor> leaf_copies(const std::vector<at::Tensor>& w) {
  std::vector<at::Tensor> out;
  for (const auto& t : w) out.push_back(t.detach().requires_grad_(true));
  return out;
}

struct AutocastState {
  bool on;
  c10::ScalarType dtype;
  static AutocastState capture(const at::Tensor& like) {
    auto type = like.is_cuda() ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
    return {autocast_enabled(type), autocast_dtype(type)};
  }
};

}  // namespace

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

struct ShardedLayer : public torch::autograd::Function<ShardedLayer> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::Tensor x, at::Tensor cos,
                                                at::Tensor sin, std::optional<at::Tensor> mask_opt, const Llama* model,
                                                std::int64_t layer) {
    at::Tensor mask = mask_opt ? *mask_opt : at::Tensor();
    const auto unit = static_cast<std::size_t>(layer) + 1;
    auto w = model->gatherer_->gather(unit);
    at::Tensor out = model->layer_forward(static_cast<std::size_t>(layer), x, cos, sin, mask, nullptr, &w);
    model->gatherer_->release(unit);
    auto ac = AutocastState::capture(x);
    ctx->saved_data["model"] = reinterpret_cast<std::int64_t>(model);
    ctx->saved_data["layer"] = layer;
    ctx->saved_data["autocast"] = ac.on;
    ctx->saved_data["autocast_dtype"] = static_cast<std::int64_t>(ac.dtype);
    ctx->save_for_backward({x, cos, sin, mask});
    return {out};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto* model = reinterpret_cast<const Llama*>(ctx->saved_data["model"].toInt());
    const auto layer = ctx->saved_data["layer"].toInt();
    const auto unit = static_cast<std::size_t>(layer) + 1;
    std::vector<at::Tensor> w = leaf_copies(model->gatherer_->gather(unit));
    at::Tensor x = saved[0].detach().requires_grad_(true);
    at::Tensor out;
    {
      at::AutoGradMode enable(true);
      AutocastGuard autocast(x.device(), static_cast<c10::ScalarType>(ctx->saved_data["autocast_dtype"].toInt()),
                             ctx->saved_data["autocast"].toBool());
      out = model->layer_forward(static_cast<std::size_t>(layer), x, saved[1], saved[2], saved[3], nullptr, &w);
    }
    std::vector<at::Tensor> inputs = {x};
    inputs.insert(inputs.end(), w.begin(), w.end());
    auto g = torch::autograd::grad({out}, inputs, {grads[0]});
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
    auto ac = AutocastState::capture(x);
    ctx->saved_data["model"] = reinterpret_cast<std::int64_t>(model);
    ctx->saved_data["autocast"] = ac.on;
    ctx->saved_data["autocast_dtype"] = static_cast<std::int64_t>(ac.dtype);
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
      AutocastGuard autocast(x.device(), static_cast<c10::ScalarType>(ctx->saved_data["autocast_dtype"].toInt()),
                             ctx->saved_data["autocast"].toBool());
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

Llama::Llama(const LlamaConfig& cfg, c10::Device device, c10::ScalarType dtype, bool materialize)
    : cfg_(cfg), device_(device), dtype_(dtype) {
  auto opts = at::TensorOptions().device(materialize ? device : c10::Device(c10::kMeta)).dtype(dtype);
  for (const auto& [name, shape] : expected_parameters(cfg)) {
    at::Tensor t = !materialize ? at::empty(shape, opts) : shape.size() == 1 ? at::ones(shape, opts) : at::zeros(shape, opts);
    params_.push_back({name, t.requires_grad_(true)});
    shapes_.push_back(shape);
  }
  // Index the list: embed, 9 per layer, norm, lm_head.
  embed_index_ = 0;
  for (std::int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    std::size_t b = 1 + 9 * static_cast<std::size_t>(l);
    layers_.push_back({b, b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8});
  }
  norm_index_ = 1 + 9 * static_cast<std::size_t>(cfg.num_hidden_layers);
  lm_head_index_ = cfg.tie_word_embeddings ? embed_index_ : norm_index_ + 1;
  inv_freq_ = inverse_frequencies(cfg).to(device);
  anchor_ = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device)).requires_grad_(true);
}

std::vector<std::size_t> Llama::unit_params(std::size_t unit) const {
  if (unit == 0) return {embed_index_};
  if (unit <= layers_.size()) {
    const LayerIdx& li = layers_[unit - 1];
    return {li.input_norm, li.q, li.k, li.v, li.o, li.post_norm, li.gate, li.up, li.down};
  }
  if (cfg_.tie_word_embeddings) return {norm_index_};
  return {norm_index_, lm_head_index_};
}

at::Tensor Llama::head_loss(const at::Tensor& residual, const at::Tensor& labels, const at::Tensor& norm_w,
                            const at::Tensor& head_w) const {
  at::Tensor flat_labels = labels.reshape({-1});
  at::Tensor idx = (flat_labels != -100).nonzero().squeeze(1);  // (N) trained positions
  at::Tensor x = residual.reshape({-1, residual.size(-1)});
  if (idx.numel() == 0) return (x.sum() * 0.0 + norm_w.sum() * 0.0 + head_w.sum() * 0.0).to(at::kFloat);
  // Under autocast the GEMMs run in bf16, as at::linear would; softmax statistics in fp32.
  const auto type = x.is_cuda() ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
  const auto out = autocast_enabled(type) ? autocast_dtype(type) : at::result_type(x, norm_w);
  at::Tensor h = fused_rms_norm(x.index_select(0, idx), norm_w, cfg_.rms_norm_eps, out);  // (N, D)
  return FusedLinearCrossEntropy::apply(h, head_w, flat_labels.index_select(0, idx))[0];
}

at::Tensor Llama::loss_sum(const at::Tensor& input_ids, const at::Tensor& position_ids, const at::Tensor& attn_mask,
                           const at::Tensor& labels) const {
  if (!gatherer_) {
    // The final norm is per position, so norming only the trained rows is exact.
    at::Tensor x = at::embedding(params_[embed_index_].tensor, input_ids);
    auto [cos, sin] = rope(position_ids, input_ids.size(-1));  // positions < T in training rows
    for (std::size_t l = 0; l < layers_.size(); ++l) x = run_layer(l, x, cos, sin, attn_mask);
    return head_loss(x, labels, params_[norm_index_].tensor, params_[lm_head_index_].tensor);
  }
  at::Tensor x = ShardedEmbedding::apply(input_ids, anchor_, this)[0];
  auto [cos, sin] = rope(position_ids, input_ids.size(-1));  // positions < T in training rows
  std::optional<at::Tensor> mask = attn_mask.defined() ? std::optional<at::Tensor>(attn_mask) : std::nullopt;
  for (std::size_t l = 0; l < layers_.size(); ++l)
    x = ShardedLayer::apply(x, cos, sin, mask, this, static_cast<std::int64_t>(l))[0];
  return ShardedHead::apply(x, labels, this)[0];
}

void Llama::set_parameter(std::size_t index, const at::Tensor& t) {
  // An undefined tensor releases the parameter (ZeRO-3 gathers it per unit when needed).
  TORCH_CHECK(!t.defined() || t.sizes() == shapes_.at(index), "set_parameter: shape mismatch for ",
              params_[index].name);
  params_[index].tensor = t;
}

std::int64_t Llama::num_parameters() const {
  std::int64_t n = 0;
  for (const auto& s : shapes_) {
    std::int64_t k = 1;
    for (auto d : s) k *= d;
    n += k;
  }
  return n;
}

void Llama::init_weights(std::uint64_t seed) {
  // The same draws a sharded rank takes from init_source, here for every parameter whole.
  const ParamSource source = init_source(seed);
  at::NoGradGuard ng;
  for (std::size_t i = 0; i < params_.size(); ++i) source(i, 0, params_[i].tensor.view({-1}));
}

ParamSource Llama::init_source(std::uint64_t seed) const {
  struct State {
    at::Generator gen;
    std::size_t next = 0;  // the next parameter to draw
    std::size_t held = static_cast<std::size_t>(-1);
    at::Tensor value;      // parameter `held`, flattened fp32 on CPU
  };
  auto st = std::make_shared<State>(State{at::make_generator<at::CPUGeneratorImpl>(seed)});
  std::vector<std::vector<std::int64_t>> shapes = shapes_;
  const double std_dev = cfg_.initializer_range;
  return [st, shapes, std_dev](std::size_t index, std::int64_t begin, at::Tensor dst) {
    at::NoGradGuard ng;
    if (index != st->held) {
      TORCH_CHECK(index >= st->next, "init_source: parameters must be asked for in order");
      // Exactly init_weights' draws, in its order; the parameters before `index` that this
      // rank does not own are drawn and dropped so that the generator stays in step.
      for (; st->next <= index; ++st->next) {
        const auto& shape = shapes[st->next];
        at::Tensor w = shape.size() == 1 ? at::ones(shape, at::TensorOptions().dtype(at::kFloat))
                                         : at::normal(0.0, std_dev, shape, st->gen, at::TensorOptions().dtype(at::kFloat));
        if (st->next == index) st->value = w.reshape({-1});
      }
      st->held = index;
    }
    dst.copy_(st->value.narrow(0, begin, dst.numel()));
  };
}

std::pair<at::Tensor, at::Tensor> Llama::rope(const at::Tensor& position_ids, std::int64_t max_position) const {
  std::int64_t needed = max_position;
  if (needed < 0) {
    ++host_reads_;
    needed = position_ids.numel() ? position_ids.max().item<std::int64_t>() + 1 : 1;
  }
  if (!cos_table_.defined() || cos_table_.size(0) < needed) {
    std::int64_t n = std::max(needed, std::max<std::int64_t>(cfg_.max_position_embeddings, 1));
    at::Tensor pos = at::arange(n, at::TensorOptions().dtype(at::kFloat).device(device_));
    at::Tensor freqs = at::outer(pos, inv_freq_);      // (P, Dh/2)
    at::Tensor emb = at::cat({freqs, freqs}, -1);      // (P, Dh)
    cos_table_ = emb.cos();
    sin_table_ = emb.sin();
  }
  // (B, T) -> (B, 1, T, Dh) so it broadcasts over heads.
  return {at::embedding(cos_table_, position_ids).unsqueeze(1), at::embedding(sin_table_, position_ids).unsqueeze(1)};
}

// The plan of one packed micro-batch: per group of similar-length samples, the flattened
// (B * T) positions to gather (each sample padded to the group's longest by repeating its
// last position, masked by causality), and where the valid outputs go back.
struct Llama::VarlenPlan {
  struct Group {
    at::Tensor gather, rows, dest;  // int64, on the model's device
    std::int64_t count = 0, width = 0;
  };
  std::vector<Group> groups;
};

namespace {

std::shared_ptr<Llama::VarlenPlan> build_varlen_plan(const at::Tensor& segments_host, c10::Device device) {
  at::Tensor seg = segments_host.to(at::kInt).contiguous();
  const std::int64_t B = seg.size(0), T = seg.size(1);
  const auto* sp = seg.data_ptr<std::int32_t>();
  struct Span {
    std::int64_t start, len;  // start in the flattened (B * T) positions
  };
  std::vector<Span> spans;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T;) {
      const std::int32_t id = sp[b * T + t];
      std::int64_t e = t + 1;
      while (e < T && sp[b * T + e] == id) ++e;
      if (id >= 0) spans.push_back({b * T + t, e - t});
      t = e;
    }
  std::stable_sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) { return x.len > y.len; });
  std::vector<std::int64_t> lengths;
  for (const Span& s : spans) lengths.push_back(s.len);
  auto plan = std::make_shared<Llama::VarlenPlan>();
  const bool pin = device.is_cuda();
  auto upload = [&](const std::vector<std::int64_t>& v) {
    at::Tensor t = at::tensor(v, at::TensorOptions().dtype(at::kLong));
    if (pin) t = t.pin_memory();
    return t.to(device, /*non_blocking=*/pin);
  };
  for (const VarlenGroup& group : varlen_groups(lengths)) {
    const std::int64_t lmax = group.width, n = static_cast<std::int64_t>(group.count);
    std::vector<std::int64_t> gather(static_cast<std::size_t>(n * lmax)), rows, dest;
    for (std::int64_t i = 0; i < n; ++i) {
      const Span& s = spans[group.first + static_cast<std::size_t>(i)];
      for (std::int64_t j = 0; j < lmax; ++j) {
        gather[static_cast<std::size_t>(i * lmax + j)] = s.start + std::min(j, s.len - 1);
        if (j < s.len) {
          rows.push_back(i * lmax + j);
          dest.push_back(s.start + j);
        }
      }
    }
    plan->groups.push_back({upload(gather), upload(rows), upload(dest), n, lmax});
  }
  return plan;
}

}  // namespace

void Llama::plan_packed(const at::Tensor& segments_host, const at::Tensor& segments) const {
  plan_ = build_varlen_plan(segments_host, device_);
  plan_segments_ = segments;
}

std::shared_ptr<const Llama::VarlenPlan> Llama::varlen_plan(const at::Tensor& segments) const {
  if (plan_ && plan_segments_.is_same(segments)) return plan_;
  ++host_reads_;  // not planned ahead: read the segment ids back once for this micro-batch
  plan_ = build_varlen_plan(segments.to(at::kCPU), device_);
  plan_segments_ = segments;
  return plan_;
}

// Packed rows, attention per sample: each sample attends causally to itself only, and the
// cost follows the samples' own lengths (sum of L^2) instead of the row's (T^2). Samples are
// gathered into groups of similar length (varlen.h), run through causal attention, and
// scattered back; pad positions get zeros. The index tensors come from the plan, built once
// per micro-batch, so no layer reads anything back to the host.
at::Tensor Llama::varlen_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& segments) const {
  const std::int64_t B = q.size(0), H = q.size(1), T = q.size(2), Dh = q.size(3);
  const std::shared_ptr<const VarlenPlan> plan = varlen_plan(segments);
  at::Tensor qf = q.transpose(1, 2).reshape({B * T, H, Dh});
  at::Tensor kf = k.transpose(1, 2).reshape({B * T, H, Dh});
  at::Tensor vf = v.transpose(1, 2).reshape({B * T, H, Dh});
  // The groups' rows are scattered back in one index_copy: one per group would copy the
  // whole output each time, forward and backward.
  std::vector<at::Tensor> rows, dest;
  for (const auto& g : plan->groups) {
    auto pick = [&](const at::Tensor& f) { return f.index_select(0, g.gather).view({g.count, g.width, H, Dh}).transpose(1, 2); };
    at::Tensor o = attention(pick(qf), pick(kf), pick(vf), at::Tensor(), 0);  // causal, (n, H, lmax, Dh)
    rows.push_back(o.transpose(1, 2).reshape({g.count * g.width, H * Dh}).index_select(0, g.rows));
    dest.push_back(g.dest);
  }
  at::Tensor out = at::zeros({B * T, H * Dh}, qf.options());
  if (!rows.empty()) out = out.index_copy(0, at::cat(dest), at::cat(rows));
  return out.view({B, T, H, Dh}).transpose(1, 2);
}

at::Tensor Llama::attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                            std::int64_t offset) const {
  if (mask.defined() && mask.dim() == 2) return varlen_attention(q, k, v, mask);  // (B, T) segment ids
  const std::int64_t Tq = q.size(2), Tk = k.size(2);
  at::Tensor m = mask;
  bool causal = !m.defined();
  if (causal && offset > 0 && Tq > 1) {
    // Decoding with a cache: query i sits at position offset + i.
    at::Tensor qi = at::arange(offset, offset + Tq, at::TensorOptions().dtype(at::kLong).device(q.device()));
    at::Tensor kj = at::arange(Tk, at::TensorOptions().dtype(at::kLong).device(q.device()));
    m = (kj.unsqueeze(0) <= qi.unsqueeze(1)).view({1, 1, Tq, Tk});
    causal = false;
  } else if (causal && Tq == 1) {
    causal = false;  // a single new token attends to everything cached
  }
  if (attn_impl_ != AttentionImpl::kExplicit) {
    return at::scaled_dot_product_attention(q, k, v, m.defined() ? std::optional<at::Tensor>(m) : std::nullopt,
                                            /*dropout_p=*/0.0, /*is_causal=*/causal);
  }
  // q arrives pre-scaled by 1/sqrt(Dh) (see layer_forward).
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1));  // (B, H, Tq, Tk)
  if (causal) {
    at::Tensor future = at::ones({Tq, Tk}, at::TensorOptions().dtype(at::kBool).device(q.device())).triu(1);
    scores.masked_fill_(future, -std::numeric_limits<float>::infinity());
  } else if (m.defined()) {
    scores.masked_fill_(m.logical_not(), -std::numeric_limits<float>::infinity());
  }
  // fp32 scores: HF's fp32 softmax. bf16 scores (autocast): softmax straight to bf16; the
  // CPU and CUDA kernels compute it in fp32 internally and round the same probabilities as
  // HF's softmax(dtype=float32).to(bf16), without two (B, H, T, T) casts each way.
  at::Tensor probs = at::softmax(scores, -1);
  return at::matmul(probs, v);
}

at::Tensor Llama::layer_forward(std::size_t layer, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                const at::Tensor& mask, KvCache* cache,
                                const std::vector<at::Tensor>* weights) const {
  const LayerIdx& li = layers_[layer];
  auto W = [&](std::size_t slot, std::size_t idx) -> const at::Tensor& {
    return weights ? (*weights)[slot] : params_[idx].tensor;
  };
  const std::int64_t B = x.size(0), T = x.size(1);
  const std::int64_t H = cfg_.num_attention_heads, K = cfg_.num_key_value_heads, Dh = cfg_.head_dim;
  // Under autocast the norms write the compute dtype (at::linear would cast per projection).
  const auto type = x.is_cuda() ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
  const auto compute = autocast_enabled(type) ? autocast_dtype(type) : at::result_type(x, W(0, li.input_norm));

  // q, k, v in one GEMM (a wider output runs faster than three narrow ones), then split and
  // rotated in one pass (sft/model/fused.h), in the activations' dtype as HF does. The
  // explicit attention folds its 1/sqrt(Dh) into q's tables instead of scaling the (T x T)
  // scores (exact when Dh is a power of four, as 64 and 256 are; within rounding otherwise).
  at::Tensor h = fused_rms_norm(x, W(0, li.input_norm), cfg_.rms_norm_eps, compute);
  at::Tensor qkv = at::linear(h, at::cat({W(1, li.q), W(2, li.k), W(3, li.v)}, 0));  // (B, T, (H + 2K) Dh)
  const bool explicit_attn = attn_impl_ == AttentionImpl::kExplicit;
  const double scale = explicit_attn ? 1.0 / std::sqrt(static_cast<double>(Dh)) : 1.0;
  auto [q, k, v] = fused_qkv_rotary(qkv, cos, sin, H, K, scale);  // (B, heads, T, Dh)

  std::int64_t offset = 0;
  if (cache) {
    offset = cache->length;
    TORCH_CHECK(offset + T <= cache->k[layer].size(2), "KV cache capacity ", cache->k[layer].size(2), " exceeded");
    cache->k[layer].narrow(2, offset, T).copy_(k);
    cache->v[layer].narrow(2, offset, T).copy_(v);
    k = cache->k[layer].narrow(2, 0, offset + T);
    v = cache->v[layer].narrow(2, 0, offset + T);
  }
  at::Tensor att = attention(q, repeat_kv(k, H / K), repeat_kv(v, H / K), mask, offset);
  att = att.transpose(1, 2).reshape({B, T, H * Dh});
  at::Tensor x2 = x + at::linear(att, W(4, li.o));

  // gate and up in one GEMM too.
  at::Tensor h2 = fused_rms_norm(x2, W(5, li.post_norm), cfg_.rms_norm_eps, compute);
  at::Tensor gu = at::linear(h2, at::cat({W(6, li.gate), W(7, li.up)}, 0));  // (B, T, 2F)
  at::Tensor mlp = at::linear(fused_swiglu(gu), W(8, li.down));
  return x2 + mlp;
}

at::Tensor Llama::forward_hidden(const at::Tensor& input_ids, const at::Tensor& position_ids,
                                 const at::Tensor& attn_mask, KvCache* cache) const {
  TORCH_CHECK(!gatherer_, "forward_hidden: the parameters are sharded (ZeRO-3); export the model to run it");
  at::Tensor x = at::embedding(params_[embed_index_].tensor, input_ids);
  auto [cos, sin] = rope(position_ids);
  const bool ckpt = checkpointing_ && !cache && at::GradMode::is_enabled();
  for (std::size_t l = 0; l < layers_.size(); ++l)
    x = ckpt ? run_layer(l, x, cos, sin, attn_mask) : layer_forward(l, x, cos, sin, attn_mask, cache, nullptr);
  if (cache) cache->length += input_ids.size(1);
  const at::Tensor& w = params_[norm_index_].tensor;
  return fused_rms_norm(x, w, cfg_.rms_norm_eps, at::result_type(x, w));
}

at::Tensor Llama::run_layer(std::size_t l, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                            const at::Tensor& attn_mask) const {
  if (!(checkpointing_ && at::GradMode::is_enabled())) return layer_forward(l, x, cos, sin, attn_mask, nullptr, nullptr);
  std::vector<at::Tensor> w;
  for (std::size_t idx : unit_params(l + 1)) w.push_back(params_[idx].tensor);
  std::optional<at::Tensor> mask = attn_mask.defined() ? std::optional<at::Tensor>(attn_mask) : std::nullopt;
  return CheckpointedLayer::apply(x, cos, sin, mask, at::TensorList(w), this, static_cast<std::int64_t>(l))[0];
}

at::Tensor Llama::lm_head(const at::Tensor& hidden) const { return at::linear(hidden, params_[lm_head_index_].tensor); }

KvCache Llama::new_cache(std::int64_t batch, std::int64_t capacity) const {
  KvCache c;
  auto opts = at::TensorOptions().device(device_).dtype(dtype_);
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    c.k.push_back(at::zeros({batch, cfg_.num_key_value_heads, capacity, cfg_.head_dim}, opts));
    c.v.push_back(at::zeros({batch, cfg_.num_key_value_heads, capacity, cfg_.head_dim}, opts));
  }
  return c;
}

}  // namespace sft::model
