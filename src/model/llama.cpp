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
  at::Tensor exponents =
      at::arange(0, c.head_dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(c.head_dim);
  at::Tensor inv = 1.0 / at::pow(at::scalar_tensor(c.rope_theta, at::kFloat), exponents);
  if (!c.rope_scaling) return inv;
  const RopeScaling& s = *c.rope_scaling;
  if (s.type == RopeScalingType::kLinear) return inv / s.factor;
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

// A bias (zeros at init) rather than a norm weight (ones): the two 1-D kinds of parameter.
bool is_bias(const std::string& name) {
  return name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
}

}  // namespace

std::vector<std::pair<std::string, std::vector<std::int64_t>>> expected_parameters(const LlamaConfig& cfg) {
  const std::int64_t D = cfg.hidden_size, F = cfg.intermediate_size, Dh = cfg.head_dim;
  const std::int64_t H = cfg.num_attention_heads, K = cfg.num_key_value_heads;
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> out;
  out.push_back({"model.embed_tokens.weight", {cfg.vocab_size, D}});
  for (std::int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", {D}});
    out.push_back({p + "self_attn.q_proj.weight", {H * Dh, D}});
    out.push_back({p + "self_attn.k_proj.weight", {K * Dh, D}});
    out.push_back({p + "self_attn.v_proj.weight", {K * Dh, D}});
    if (cfg.qkv_bias()) {  // after the three matrices, so q|k|v and their biases each stay contiguous
      out.push_back({p + "self_attn.q_proj.bias", {H * Dh}});
      out.push_back({p + "self_attn.k_proj.bias", {K * Dh}});
      out.push_back({p + "self_attn.v_proj.bias", {K * Dh}});
    }
    if (cfg.qk_norm()) {
      out.push_back({p + "self_attn.q_norm.weight", {Dh}});
      out.push_back({p + "self_attn.k_norm.weight", {Dh}});
    }
    out.push_back({p + "self_attn.o_proj.weight", {D, H * Dh}});
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
    at::Tensor t = !materialize                          ? at::empty(shape, opts)
                   : shape.size() == 1 && !is_bias(name) ? at::ones(shape, opts)
                                                         : at::zeros(shape, opts);
    params_.push_back({name, t.requires_grad_(true)});
    shapes_.push_back(shape);
  }
  // Index the list: embed, each layer's parameters (by name: how many, and which, depends
  // on the architecture), norm, lm_head.
  const std::pair<const char*, std::size_t LayerIdx::*> fields[] = {
      {"input_layernorm.weight", &LayerIdx::input_norm},
      {"self_attn.q_proj.weight", &LayerIdx::q},
      {"self_attn.k_proj.weight", &LayerIdx::k},
      {"self_attn.v_proj.weight", &LayerIdx::v},
      {"self_attn.q_proj.bias", &LayerIdx::q_bias},
      {"self_attn.k_proj.bias", &LayerIdx::k_bias},
      {"self_attn.v_proj.bias", &LayerIdx::v_bias},
      {"self_attn.q_norm.weight", &LayerIdx::q_norm},
      {"self_attn.k_norm.weight", &LayerIdx::k_norm},
      {"self_attn.o_proj.weight", &LayerIdx::o},
      {"post_attention_layernorm.weight", &LayerIdx::post_norm},
      {"mlp.gate_proj.weight", &LayerIdx::gate},
      {"mlp.up_proj.weight", &LayerIdx::up},
      {"mlp.down_proj.weight", &LayerIdx::down}};
  embed_index_ = 0;
  std::size_t i = 1;
  for (std::int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    LayerIdx li;
    li.begin = i;
    for (; i < params_.size() && params_[i].name.compare(0, prefix.size(), prefix) == 0; ++i)
      for (const auto& [suffix, field] : fields)
        if (params_[i].name.compare(prefix.size(), std::string::npos, suffix) == 0) li.*field = i;
    li.end = i;
    layers_.push_back(li);
  }
  norm_index_ = i;
  lm_head_index_ = cfg.tie_word_embeddings ? embed_index_ : norm_index_ + 1;
  inv_freq_ = inverse_frequencies(cfg).to(device);
}

std::vector<std::size_t> Llama::unit_params(std::size_t unit) const {
  if (unit == 0) return {embed_index_};
  if (unit <= layers_.size()) {
    const LayerIdx& li = layers_[unit - 1];
    std::vector<std::size_t> ids;
    for (std::size_t i = li.begin; i < li.end; ++i) ids.push_back(i);
    return ids;
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
  return {input_norm, o,    post_norm, down,   qkv,    gate_up, qkv_bias, q,     k,
          v,          gate, up,        q_bias, k_bias, v_bias,  q_norm,   k_norm};
}

LayerWeights LayerWeights::from_list(const std::vector<at::Tensor>& w) {
  TORCH_CHECK(w.size() == 17, "LayerWeights::from_list: expected list()'s 17 slots, got ", w.size());
  LayerWeights r;
  r.input_norm = w[0];
  r.o = w[1];
  r.post_norm = w[2];
  r.down = w[3];
  r.qkv = w[4];
  r.gate_up = w[5];
  r.qkv_bias = w[6];
  r.q = w[7];
  r.k = w[8];
  r.v = w[9];
  r.gate = w[10];
  r.up = w[11];
  r.q_bias = w[12];
  r.k_bias = w[13];
  r.v_bias = w[14];
  r.q_norm = w[15];
  r.k_norm = w[16];
  return r;
}

LayerWeights Llama::own_layer_weights(std::size_t l) const {
  const LayerIdx& li = layers_[l];
  auto P = [&](std::size_t i) { return i == kAbsent ? at::Tensor() : params_[i].tensor; };
  LayerWeights w;
  w.input_norm = P(li.input_norm);
  w.o = P(li.o);
  w.post_norm = P(li.post_norm);
  w.down = P(li.down);
  w.q = P(li.q);
  w.k = P(li.k);
  w.v = P(li.v);
  w.gate = P(li.gate);
  w.up = P(li.up);
  w.q_bias = P(li.q_bias);
  w.k_bias = P(li.k_bias);
  w.v_bias = P(li.v_bias);
  w.q_norm = P(li.q_norm);
  w.k_norm = P(li.k_norm);
  return w;
}

LayerWeights Llama::layer_views(std::size_t l, const at::Tensor& unit) const {
  // q, k, v lie side by side in the unit (unit_params order), and so do their biases and
  // gate and up: one split gives each group as one contiguous part, viewed as the stacked
  // matrix. Parts in expected_parameters' order.
  const std::int64_t D = cfg_.hidden_size, F = cfg_.intermediate_size, Dh = cfg_.head_dim;
  const std::int64_t H = cfg_.num_attention_heads, K = cfg_.num_key_value_heads;
  const std::int64_t qkv_rows = (H + 2 * K) * Dh;
  enum Part { kInputNorm, kQkv, kQkvBias, kQNorm, kKNorm, kO, kPostNorm, kGateUp, kDown };
  std::vector<std::pair<Part, std::int64_t>> parts = {{kInputNorm, D}, {kQkv, qkv_rows * D}};
  if (cfg_.qkv_bias()) parts.push_back({kQkvBias, qkv_rows});
  if (cfg_.qk_norm()) parts.insert(parts.end(), {{kQNorm, Dh}, {kKNorm, Dh}});
  parts.insert(parts.end(), {{kO, D * H * Dh}, {kPostNorm, D}, {kGateUp, 2 * F * D}, {kDown, D * F}});
  std::vector<std::int64_t> sizes;
  std::int64_t used = 0;
  for (const auto& [part, n] : parts) {
    sizes.push_back(n);
    used += n;
  }
  TORCH_CHECK(unit.dim() == 1 && unit.numel() >= used, "layer ", l, ": a gathered unit of ", unit.numel(),
              " elements cannot hold its ", used);
  if (unit.numel() > used) sizes.push_back(unit.numel() - used);
  const std::vector<at::Tensor> p = at::split_with_sizes(unit, sizes);
  LayerWeights w;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    switch (parts[i].first) {
      case kInputNorm: w.input_norm = p[i]; break;
      case kQkv: w.qkv = p[i].view({qkv_rows, D}); break;
      case kQkvBias: w.qkv_bias = p[i]; break;
      case kQNorm: w.q_norm = p[i]; break;
      case kKNorm: w.k_norm = p[i]; break;
      case kO: w.o = p[i].view({D, H * Dh}); break;
      case kPostNorm: w.post_norm = p[i]; break;
      case kGateUp: w.gate_up = p[i].view({2 * F, D}); break;
      case kDown: w.down = p[i].view({D, F}); break;
    }
  }
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
    at::Tensor value;  // parameter `held`, flattened fp32 on CPU
  };
  auto st = std::make_shared<State>(State{at::make_generator<at::CPUGeneratorImpl>(seed)});
  std::vector<std::vector<std::int64_t>> shapes = shapes_;
  std::vector<bool> bias;
  for (const auto& p : params_) bias.push_back(is_bias(p.name));
  const double std_dev = cfg_.initializer_range;
  return [st, shapes, bias, std_dev](std::size_t index, std::int64_t begin, at::Tensor dst) {
    at::NoGradGuard ng;
    if (index != st->held) {
      TORCH_CHECK(index >= st->next, "init_source: parameters must be asked for in order");
      // Exactly init_weights' draws, in its order; the parameters before `index` that this
      // rank does not own are drawn and dropped so that the generator stays in step.
      for (; st->next <= index; ++st->next) {
        const auto& shape = shapes[st->next];
        const auto f32 = at::TensorOptions().dtype(at::kFloat);
        at::Tensor w = bias[st->next]      ? at::zeros(shape, f32)
                       : shape.size() == 1 ? at::ones(shape, f32)
                                           : at::normal(0.0, std_dev, shape, st->gen, f32);
        if (st->next == index) st->value = w.reshape({-1});
      }
      st->held = index;
    }
    dst.copy_(st->value.narrow(0, begin, dst.numel()));
  };
}

std::pair<at::Tensor, at::Tensor> Llama::rope(const at::Tensor& position_ids,
                                              std::int64_t max_position) const {
  std::int64_t needed = max_position;
  if (needed < 0) {
    ++host_reads_;
    needed = position_ids.numel() ? position_ids.max().item<std::int64_t>() + 1 : 1;
  }
  if (!cos_table_.defined() || cos_table_.size(0) < needed) {
    std::int64_t n = std::max(needed, std::max<std::int64_t>(cfg_.max_position_embeddings, 1));
    at::Tensor pos = at::arange(n, at::TensorOptions().dtype(at::kFloat).device(device_));
    at::Tensor freqs = at::outer(pos, inv_freq_);  // (P, Dh/2)
    at::Tensor emb = at::cat({freqs, freqs}, -1);  // (P, Dh)
    cos_table_ = emb.cos();
    sin_table_ = emb.sin();
  }
  // (B, T) -> (B, 1, T, Dh) so it broadcasts over heads.
  return {at::embedding(cos_table_, position_ids).unsqueeze(1),
          at::embedding(sin_table_, position_ids).unsqueeze(1)};
}

at::Tensor Llama::forward_hidden(const at::Tensor& input_ids, const at::Tensor& position_ids,
                                 const at::Tensor& attention_mask, KvCache* cache) const {
  TORCH_CHECK(!gatherer_, "forward_hidden: the parameters are sharded (ZeRO-3); export the model to run it");
  at::Tensor x = at::embedding(params_[embed_index_].tensor, input_ids);
  auto [cos, sin] = rope(position_ids);
  const bool ckpt = checkpointing_ && !cache && at::GradMode::is_enabled();
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    const LayerWeights w = own_layer_weights(l);
    x = ckpt ? run_layer(l, x, cos, sin, attention_mask, w)
             : layer_forward(l, x, cos, sin, attention_mask, cache, w);
  }
  if (cache) cache->length += input_ids.size(1);
  const at::Tensor& w = params_[norm_index_].tensor;
  return fused_rms_norm(x, w, cfg_.rms_norm_eps, at::result_type(x, w));
}

at::Tensor Llama::lm_head(const at::Tensor& hidden) const {
  return at::linear(hidden, params_[lm_head_index_].tensor);
}

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
