// LlamaConfig: the Hugging Face config.json of a LLaMA-family decoder: model_type "llama"
// (LLaMA-1/2/3/3.1), "qwen2" (Qwen2, Qwen2.5) or "qwen3" (Qwen3 dense). The three share one
// layer; what differs is in `model_type` and the helpers below it: Qwen2 adds biases to the
// q, k and v projections, Qwen3 normalises each head of q and k (RMSNorm over head_dim)
// before the rotary embedding and defaults head_dim to 128 whatever hidden_size is.
//
// Fields this implementation does not support with the given value (another model_type,
// hidden_act other than silu, biases beyond Qwen2's q/k/v ones, rope_scaling types other
// than llama3/linear, layer_types other than full/sliding attention) are errors naming the
// field. Unknown fields are kept verbatim and written back on save.
//
// Sliding-window attention (Qwen2/Qwen3's use_sliding_window, sliding_window,
// max_window_layers, layer_types) is read as transformers 5 reads it: a layer attends
// within the last `sliding_window` tokens only when use_sliding_window is true and its
// layer type is "sliding_attention" (given, or layers >= max_window_layers). sft always
// attends to the whole sequence, which is the same computation for sequences of at most
// sliding_window tokens: such configs load with a warning when max_position_embeddings
// exceeds the window (every released Qwen2.5/Qwen3 checkpoint has use_sliding_window false,
// and loads silently).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sft::model {

enum class RopeScalingType { kLlama3, kLinear };  // rope_scaling.rope_type (or .type)

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kLlama3;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  std::int64_t original_max_position_embeddings = 8192;
};

enum class ModelType { kLlama, kQwen2, kQwen3 };

struct LlamaConfig {
  ModelType model_type = ModelType::kLlama;
  std::int64_t vocab_size = 32000;
  std::int64_t hidden_size = 4096;
  std::int64_t intermediate_size = 11008;
  std::int64_t num_hidden_layers = 32;
  std::int64_t num_attention_heads = 32;
  std::int64_t num_key_value_heads = 32;
  std::int64_t head_dim = 128;
  std::int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;
  bool tie_word_embeddings = false;
  std::int64_t bos_token_id = 1;
  std::vector<std::int64_t> eos_token_ids = {2};
  std::string torch_dtype = "float32";
  double initializer_range = 0.02;
  // The window transformers applies, and the layers it applies it to (empty for a model
  // that attends fully everywhere); see the file comment.
  std::optional<std::int64_t> sliding_window;
  std::vector<std::int64_t> sliding_layers;
  nlohmann::json raw;  // the parsed config.json, unknown fields included

  // `where` names the source in errors ("DIR/config.json" or "model.config").
  static LlamaConfig from_json(const nlohmann::json& j, const std::string& where);
  nlohmann::json to_json() const;

  // What model_type implies for the layer: biases on q, k and v (Qwen2); per-head RMSNorm
  // of q and k before rotary (Qwen3).
  bool qkv_bias() const { return model_type == ModelType::kQwen2; }
  bool qk_norm() const { return model_type == ModelType::kQwen3; }
  // config.json's "model_type" and "architectures" entry: "qwen2", "Qwen2ForCausalLM".
  const char* model_type_name() const;
  const char* architecture() const;

  std::int64_t num_parameters() const;
  std::int64_t num_layer_parameters() const;  // one decoder layer's
  std::int64_t num_embedding_parameters() const { return vocab_size * hidden_size; }
};

LlamaConfig load_llama_config(const std::string& dir);

}  // namespace sft::model
