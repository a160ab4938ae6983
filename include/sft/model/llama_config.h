// LlamaConfig: the Hugging Face config.json of a LLaMA-family model (LLaMA-1/2/3/3.1).
//
// Fields this implementation does not support with the given value (another model_type,
// hidden_act other than silu, biases, rope_scaling types other than llama3/linear) are
// errors naming the field. Unknown fields are kept verbatim and written back on save.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sft::model {

struct RopeScaling {
  std::string type;  // "llama3" | "linear"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  std::int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
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
  nlohmann::json raw;  // the parsed config.json, unknown fields included

  // `where` names the source in errors ("DIR/config.json" or "model.config").
  static LlamaConfig from_json(const nlohmann::json& j, const std::string& where);
  nlohmann::json to_json() const;

  std::int64_t num_parameters() const;
  std::int64_t num_embedding_parameters() const { return vocab_size * hidden_size; }
};

LlamaConfig load_llama_config(const std::string& dir);

}  // namespace sft::model
