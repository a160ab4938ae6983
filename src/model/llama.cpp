// Llama (sft/model/llama.h): the parameter list and its units, initialisation (whole or
// served shard by shard), the rotary tables, the forward to hidden states and logits
// (forward_hidden, lm_head) and the KV cache. The decoder layer and attention are in
// llama_attention.cpp; the training loss, activation checkpointing and ZeRO-3 in
// llama_training.cpp.
#include "sft/model/llama.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

#include "sft/model/fused.h"
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
}  // namespace

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

std::vector<at::Tensor> Llama::unit_views(std::size_t unit, const at::Tensor& flat) const {
  // One split of the unit's single tensor: autograd's backward of it is one concatenation
  // of the parts' gradients, which is the unit's flat gradient, in its layout.
  const std::vector<std::size_t> ids = unit_params(unit);
  std::vector<std::int64_t> sizes;
  std::int64_t used = 0;
  for (std::size_t i : ids) {
    std::int64_t n = 1;
    for (auto d : shapes_[i]) n *= d;
    sizes.push_back(n);
    used += n;
  }
  TORCH_CHECK(flat.dim() == 1 && flat.numel() >= used, "unit ", unit, ": a gathered unit of ", flat.numel(),
              " elements cannot hold its ", used);
  if (flat.numel() > used) sizes.push_back(flat.numel() - used);  // the padding
  std::vector<at::Tensor> parts = at::split_with_sizes(flat, sizes);
  std::vector<at::Tensor> out;
  for (std::size_t k = 0; k < ids.size(); ++k) out.push_back(parts[k].view(shapes_[ids[k]]));
  return out;
}

std::vector<at::Tensor> LayerWeights::list() const {
  if (stacked()) return {input_norm, o, post_norm, down, qkv, gate_up};
  return {input_norm, o, post_norm, down, q, k, v, gate, up};
}

LayerWeights LayerWeights::from_list(const std::vector<at::Tensor>& w) {
  LayerWeights r{w.at(0), w.at(1), w.at(2), w.at(3)};
  if (w.size() == 6) {
    r.qkv = w[4];
    r.gate_up = w[5];
  } else {
    r.q = w.at(4);
    r.k = w.at(5);
    r.v = w.at(6);
    r.gate = w.at(7);
    r.up = w.at(8);
  }
  return r;
}

LayerWeights Llama::own_layer_weights(std::size_t l) const {
  const LayerIdx& li = layers_[l];
  auto P = [&](std::size_t i) -> const at::Tensor& { return params_[i].tensor; };
  LayerWeights w{P(li.input_norm), P(li.o), P(li.post_norm), P(li.down)};
  w.q = P(li.q);
  w.k = P(li.k);
  w.v = P(li.v);
  w.gate = P(li.gate);
  w.up = P(li.up);
  return w;
}

LayerWeights Llama::layer_views(std::size_t l, const at::Tensor& unit) const {
  // q, k, v lie side by side in the unit (unit_params order), and so do gate and up: one
  // split gives each group as one contiguous part, viewed as the stacked matrix.
  const std::int64_t D = cfg_.hidden_size, F = cfg_.intermediate_size, Dh = cfg_.head_dim;
  const std::int64_t H = cfg_.num_attention_heads, K = cfg_.num_key_value_heads;
  const std::int64_t qkv = (H + 2 * K) * Dh * D, o = D * H * Dh, gu = 2 * F * D, down = D * F;
  const std::int64_t used = D + qkv + o + D + gu + down;
  TORCH_CHECK(unit.dim() == 1 && unit.numel() >= used, "layer ", l, ": a gathered unit of ", unit.numel(),
              " elements cannot hold its ", used);
  std::vector<std::int64_t> sizes = {D, qkv, o, D, gu, down};
  if (unit.numel() > used) sizes.push_back(unit.numel() - used);
  std::vector<at::Tensor> p = at::split_with_sizes(unit, sizes);
  LayerWeights w{p[0], p[2].view({D, H * Dh}), p[3], p[5].view({D, F})};
  w.qkv = p[1].view({(H + 2 * K) * Dh, D});
  w.gate_up = p[4].view({2 * F, D});
  return w;
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

at::Tensor Llama::forward_hidden(const at::Tensor& input_ids, const at::Tensor& position_ids,
                                 const at::Tensor& mask, KvCache* cache) const {
  TORCH_CHECK(!gatherer_, "forward_hidden: the parameters are sharded (ZeRO-3); export the model to run it");
  at::Tensor x = at::embedding(params_[embed_index_].tensor, input_ids);
  auto [cos, sin] = rope(position_ids);
  const bool ckpt = checkpointing_ && !cache && at::GradMode::is_enabled();
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    const LayerWeights w = own_layer_weights(l);
    x = ckpt ? run_layer(l, x, cos, sin, mask, w) : layer_forward(l, x, cos, sin, mask, cache, w);
  }
  if (cache) cache->length += input_ids.size(1);
  const at::Tensor& w = params_[norm_index_].tensor;
  return fused_rms_norm(x, w, cfg_.rms_norm_eps, at::result_type(x, w));
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
