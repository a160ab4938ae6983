// Llama: the LLaMA decoder (Touvron et al.) in the Hugging Face layout and conventions:
// RMSNorm computed in fp32, rotary embeddings in HF's rotate_half convention (element i
// pairs with i + head_dim/2) on HF-layout q/k weights, grouped-query attention
// (num_key_value_heads), SwiGLU MLP, untied or tied lm_head, rope_theta and rope_scaling
// (llama3, linear). The same class runs Qwen2/Qwen2.5 (biases on q, k, v) and Qwen3 (per-head
// RMSNorm of q and k before rotary), as the config's model_type says (llama_config.h).
//
// Parameters are plain leaf tensors named exactly as in a HF checkpoint
// ("model.layers.3.self_attn.q_proj.weight"), in a fixed order, so that checkpoints, the
// optimizer's flat buffers and sharding all index the same list. The trainer may rebind a
// parameter to a view of its own storage (set_parameter).
//
// Attention: at::scaled_dot_product_attention on LibTorch >= 2.0 (flash / memory-efficient
// kernels on CUDA), an explicit matmul-softmax-matmul otherwise (or when asked). The
// attention_mask argument is either undefined (causal), a boolean (B, 1, Tq, Tk) mask (true =
// may attend), or, for packed batches, the (B, T) integer segment_ids of data::Batch (-1 =
// pad): then each sample attends
// causally within itself, computed per sample (cost sum L^2, not T^2). Letters: B batch, T tokens, D hidden,
// H heads, K kv heads, Dh head_dim, V vocab.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "sft/model/ignore_index.h"
#include "sft/model/llama_config.h"

namespace sft::model {

struct NamedTensor {
  std::string name;
  at::Tensor tensor;
};

// Per-layer key/value cache for incremental decoding: (B, K, capacity, Dh) per layer.
struct KvCache {
  std::vector<at::Tensor> k, v;
  std::int64_t length = 0;
};

enum class AttentionImpl { kAuto, kExplicit, kSdpa };

// A decoder layer's weights. The layer multiplies by q|k|v stacked into one matrix (plus
// the q|k|v biases stacked, Qwen2) and by gate|up stacked into another (one GEMM each:
// (H + 2K) Dh x D and 2F x D). `qkv`, `qkv_bias` and `gate_up` are given stacked (views of a
// gathered ZeRO-3 unit, where they lie side by side), or undefined: then the layer stacks
// `q, k, v`, their biases and `gate, up` (a model's own parameters) itself, so that no
// stacked copy outlives the layer's pass. Tensors the architecture lacks stay undefined
// (biases but for Qwen2, q_norm and k_norm but for Qwen3).
struct LayerWeights {
  at::Tensor input_norm, o, post_norm, down;
  at::Tensor qkv, gate_up, qkv_bias;
  at::Tensor q, k, v, gate, up, q_bias, k_bias, v_bias;
  at::Tensor q_norm, k_norm;  // (Dh) each
  bool stacked() const { return qkv.defined(); }
  // Every slot in a fixed order, undefined where absent (activation checkpointing's
  // inputs), and back.
  std::vector<at::Tensor> list() const;
  static LayerWeights from_list(const std::vector<at::Tensor>& w);  // REQUIRES: list()'s output
};

// Supplies parameters one unit at a time when they are sharded across ranks (ZeRO-3).
// Units: 0 = embedding, l + 1 = decoder layer l, L + 1 = final norm and lm_head (the
// embedding again when tied).
class ParamGatherer {
 public:
  virtual ~ParamGatherer() = default;
  // The unit's parameters back to back in parameters() order (padding after), one 1-D
  // tensor that requires grad and is the same tensor every time it is asked for: its
  // gradient is the unit's, complete once the backward has used the unit, and is the
  // gatherer's to reduce. Its storage holds the values now, until release(unit).
  virtual at::Tensor gather(std::size_t unit) = 0;
  // The unit's values are not needed until regather(unit): its storage may be freed (the
  // tensor, and views the autograd graph saved, stay).
  virtual void release(std::size_t unit) = 0;
  // A backward needs the unit's values again: refills the same storage.
  virtual void regather(std::size_t unit) = 0;
};

// Fills `dst` (1-D, any device and dtype) with elements [begin, begin + dst.numel()) of
// parameter `index` of parameters() (flattened), without materialising the rest of the
// model: how a rank that owns only shards of the weights gets them (train/optimizer.h).
using ParamSource = std::function<void(std::size_t index, std::int64_t begin, at::Tensor dst)>;

class Llama {
 public:
  // materialize = false builds the parameters on the meta device (shapes, no storage): the
  // optimizer then allocates what this rank owns and fills it from a ParamSource.
  Llama(const LlamaConfig& cfg, c10::Device device = c10::kCPU, c10::ScalarType dtype = c10::kFloat,
        bool materialize = true);

  const LlamaConfig& config() const { return cfg_; }
  c10::Device device() const { return device_; }
  c10::ScalarType dtype() const { return dtype_; }

  // HF names in a fixed order: embed, per layer (input_layernorm, q, k, v, [q, k, v biases:
  // qwen2], [q_norm, k_norm: qwen3], o, post_attention_layernorm, gate, up, down), final
  // norm, lm_head (absent when tied). q|k|v, their biases and gate|up each lie side by side
  // (layer_views relies on it). Names are HF's ("model.layers.0.self_attn.q_proj.bias").
  const std::vector<NamedTensor>& parameters() const { return params_; }
  void set_parameter(std::size_t index, const at::Tensor& t);
  std::int64_t num_parameters() const;

  // HF initialisation: N(0, initializer_range) for matrices, ones for norms, zeros for biases; seeded.
  void init_weights(std::uint64_t seed);
  // The same values as init_weights(seed), served range by range: parameters are drawn in
  // order from the same generator (one parameter in memory at a time), so a rank gets
  // exactly its shards of the unsharded init. REQUIRES: calls in non-decreasing index.
  ParamSource init_source(std::uint64_t seed) const;

  // Hidden states after the final norm, (B, T, D). position_ids (B, T). attention_mask: undefined
  // (causal), (B, T) int32 segment ids of packed rows (causal within each sample; -1 pads),
  // or (B, 1, T, Tk) bool. With a cache, new keys/values are appended at cache->length.
  at::Tensor forward_hidden(const at::Tensor& input_ids, const at::Tensor& position_ids,
                            const at::Tensor& attention_mask = {}, KvCache* cache = nullptr) const;
  at::Tensor lm_head(const at::Tensor& hidden) const;  // (..., D) -> (..., V)
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& position_ids,
                     const at::Tensor& attention_mask = {}, KvCache* cache = nullptr) const {
    return lm_head(forward_hidden(input_ids, position_ids, attention_mask, cache));
  }

  // The SFT training loss: summed cross-entropy over positions whose label is not
  // kIgnoreIndex (ignore_index.h).
  // Only trained positions go through lm_head, so the logits of masked prompt tokens are
  // never computed. `trained_positions`: those positions' flat indices into labels (int64, on the
  // model's device), built on the host with the batch; undefined: found on the device
  // (nonzero, which makes the host wait for the GPU).
  // With a gatherer (ZeRO-3) each unit is gathered for its forward and released after it;
  // a layer is gathered again when its backward starts and released when it ends (the head
  // stays from its forward through its backward); activations are kept as without ZeRO
  // (activation checkpointing recomputes each layer from the weights gathered again).
  at::Tensor loss_sum(const at::Tensor& input_ids, const at::Tensor& position_ids,
                      const at::Tensor& attention_mask, const at::Tensor& labels,
                      const at::Tensor& trained_positions = {}) const;
  void set_gatherer(ParamGatherer* g) { gatherer_ = g; }
  ParamGatherer* gatherer() const { return gatherer_; }
  std::size_t num_units() const { return layers_.size() + 2; }
  // parameters() indices of a unit's tensors.
  std::vector<std::size_t> unit_params(std::size_t unit) const;

  // Packed batches without host stalls: builds the per-sample attention plan of a (B, T)
  // segment-id tensor from its host copy once per micro-batch and uploads its index
  // tensors once (non-blocking); every layer, and the recompute in backward, then uses it
  // for `segment_ids` (the device tensor passed to loss_sum). Without it, the plan is built
  // from `segment_ids` on its first use in a forward (one host read per micro-batch).
  void plan_packed(const at::Tensor& segment_ids_host, const at::Tensor& segment_ids) const;
  struct VarlenPlan;  // the index tensors of one packed micro-batch (llama_attention.cpp)
  // Device-to-host reads the model made (segment ids, positions): a test hook showing that
  // a training step's count does not grow with the number of layers.
  std::int64_t host_reads() const { return host_reads_; }

  KvCache new_cache(std::int64_t batch, std::int64_t capacity) const;
  void set_activation_checkpointing(bool on) { checkpointing_ = on; }
  bool activation_checkpointing() const { return checkpointing_; }
  void set_attention_impl(AttentionImpl impl) { attn_impl_ = impl; }

  // Index of the lm_head weight in parameters() (the embedding when tied).
  std::size_t lm_head_index() const { return lm_head_index_; }
  const at::Tensor& lm_head_weight() const { return params_[lm_head_index_].tensor; }

 private:
  static constexpr std::size_t kAbsent = static_cast<std::size_t>(-1);
  // A layer's parameters() indices: all of them [begin, end), and each (kAbsent where the
  // architecture has none).
  struct LayerIdx {
    std::size_t begin = 0, end = 0;
    std::size_t input_norm = kAbsent, q = kAbsent, k = kAbsent, v = kAbsent, o = kAbsent, post_norm = kAbsent,
                gate = kAbsent, up = kAbsent, down = kAbsent;
    std::size_t q_bias = kAbsent, k_bias = kAbsent, v_bias = kAbsent, q_norm = kAbsent, k_norm = kAbsent;
  };
  friend struct CheckpointedLayer;
  friend struct GatherInBackward;
  friend struct ReleaseInBackward;
  at::Tensor head_loss(const at::Tensor& residual, const at::Tensor& labels,
                       const at::Tensor& trained_positions, const at::Tensor& norm_w,
                       const at::Tensor& head_w) const;
  at::Tensor sharded_loss_sum(const at::Tensor& input_ids, const at::Tensor& position_ids,
                              const at::Tensor& attention_mask, const at::Tensor& labels,
                              const at::Tensor& trained_positions) const;
  // Layer l's weights: its own parameters (q|k|v and gate|up concatenated, which autograd
  // differentiates back to each), or views of a gathered unit (sharded: no copy).
  LayerWeights own_layer_weights(std::size_t l) const;
  LayerWeights layer_views(std::size_t l, const at::Tensor& unit) const;
  // Views of a gathered unit's parameters, in unit_params() order.
  std::vector<at::Tensor> unit_views(std::size_t unit, const at::Tensor& flat) const;
  // One decoder layer, through activation checkpointing when it is on and grads are enabled.
  at::Tensor run_layer(std::size_t l, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                       const at::Tensor& attention_mask, const LayerWeights& w) const;
  at::Tensor layer_forward(std::size_t layer, const at::Tensor& x, const at::Tensor& cos,
                           const at::Tensor& sin, const at::Tensor& attention_mask, KvCache* cache,
                           const LayerWeights& w) const;
  // max_position < 0: read from position_ids (generation); training passes a bound (T).
  std::pair<at::Tensor, at::Tensor> rope(const at::Tensor& position_ids,
                                         std::int64_t max_position = -1) const;
  std::shared_ptr<const VarlenPlan> varlen_plan(const at::Tensor& segment_ids) const;
  at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& attention_mask, std::int64_t offset) const;
  at::Tensor varlen_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& segment_ids) const;

  LlamaConfig cfg_;
  c10::Device device_;
  c10::ScalarType dtype_;
  std::vector<NamedTensor> params_;
  std::vector<std::vector<std::int64_t>> shapes_;
  std::vector<LayerIdx> layers_;
  std::size_t embed_index_ = 0, norm_index_ = 0, lm_head_index_ = 0;
  at::Tensor inv_freq_;                       // (Dh/2) fp32, rope_scaling applied
  mutable at::Tensor cos_table_, sin_table_;  // (P, Dh) fp32, grown on demand
  // The packed-attention plan of the current micro-batch, keyed by its segment tensor.
  mutable std::shared_ptr<const VarlenPlan> plan_;
  mutable at::Tensor plan_segment_ids_;  // held, so its identity cannot be reused by another tensor
  mutable std::int64_t host_reads_ = 0;
  bool checkpointing_ = false;
  AttentionImpl attn_impl_ = AttentionImpl::kAuto;
  ParamGatherer* gatherer_ = nullptr;
};

// The parameter names and shapes a config implies, in Llama::parameters() order, without
// allocating anything (checkpoint checks and memory planning use it).
std::vector<std::pair<std::string, std::vector<std::int64_t>>> expected_parameters(const LlamaConfig& cfg);

}  // namespace sft::model
