#include "sft/model/llama_config.h"

#include <cmath>
#include <mutex>
#include <set>
#include <utility>

#include "sft/util/error.h"
#include "sft/util/safe_io.h"
#include "sft/util/fs.h"
#include "sft/util/log.h"

namespace sft::model {
namespace {

using nlohmann::json;

std::int64_t get_int(const json& j, const char* k, std::int64_t def, const std::string& where,
                     std::string& errors, bool required = false) {
  auto it = j.find(k);
  if (it == j.end() || it->is_null()) {
    if (required) errors += "\n" + where + ": " + k + ": missing";
    return def;
  }
  if (!it->is_number_integer() || it->get<std::int64_t>() < 0) {
    errors += "\n" + where + ": " + k + ": expected a non-negative integer, got " + it->dump();
    return def;
  }
  return it->get<std::int64_t>();
}

double get_num(const json& j, const char* k, double def, const std::string& where, std::string& errors) {
  auto it = j.find(k);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_number()) {
    errors += "\n" + where + ": " + k + ": expected a number, got " + it->dump();
    return def;
  }
  return it->get<double>();
}

struct TypeNames {
  ModelType type;
  const char* model_type;
  const char* architecture;
};
constexpr TypeNames kTypes[] = {{ModelType::kLlama, "llama", "LlamaForCausalLM"},
                                {ModelType::kQwen2, "qwen2", "Qwen2ForCausalLM"},
                                {ModelType::kQwen3, "qwen3", "Qwen3ForCausalLM"}};

const TypeNames& names_of(ModelType t) {
  for (const auto& n : kTypes)
    if (n.type == t) return n;
  return kTypes[0];
}

// model_type, or when it is absent the architecture named (a config.json without
// model_type has always meant llama here). Mismatches and unknown names are errors.
ModelType read_model_type(const json& j, const std::string& where, std::string& errors) {
  const TypeNames* type = nullptr;
  if (j.contains("model_type") && !j["model_type"].is_null()) {
    for (const auto& n : kTypes)
      if (j["model_type"] == n.model_type) type = &n;
    if (!type) {
      errors += "\n" + where + ": model_type: " + j["model_type"].dump() +
                " is not supported (\"llama\", \"qwen2\" or \"qwen3\")";
      return ModelType::kLlama;
    }
  }
  if (j.contains("architectures") && j["architectures"].is_array())
    for (const auto& a : j["architectures"]) {
      const TypeNames* named = nullptr;
      for (const auto& n : kTypes)
        if (a == n.architecture) named = &n;
      if (!named)
        errors += "\n" + where + ": architectures: " + a.dump() +
                  " is not supported (LlamaForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM)";
      else if (!type)
        type = named;
      else if (named != type)
        errors += "\n" + where + ": architectures: " + a.dump() + " does not match model_type \"" +
                  type->model_type + "\" (expected " + type->architecture + ")";
    }
  return type ? type->type : ModelType::kLlama;
}

// The same warning once per process (a run reads its config.json more than once).
void warn_once(const std::string& message) {
  static std::mutex mu;
  static std::set<std::string> said;
  std::lock_guard<std::mutex> lock(mu);
  if (said.insert(message).second) sft::log::warn("{}", message);
}

// Qwen2/Qwen3's sliding window as transformers 5.x resolves it (Qwen2Config.__post_init__):
// the window exists only under use_sliding_window (sliding_window defaults to 4096; null:
// none); layer_types, when given, says which layers use it, else layers from
// max_window_layers (default 28) on do. A layer type the window cannot serve is an error, as
// transformers fails on it in its forward.
void read_sliding_window(const json& j, LlamaConfig& c, const std::string& where, std::string& errors) {
  bool use = false;
  if (j.contains("use_sliding_window") && !j["use_sliding_window"].is_null()) {
    if (!j["use_sliding_window"].is_boolean())
      errors += "\n" + where + ": use_sliding_window: expected true or false";
    else
      use = j["use_sliding_window"];
  }
  std::optional<std::int64_t> window;
  if (use && !(j.contains("sliding_window") && j["sliding_window"].is_null())) {
    window = get_int(j, "sliding_window", 4096, where, errors);
    if (*window == 0) errors += "\n" + where + ": sliding_window: must be positive";
  }
  const std::int64_t L = c.num_hidden_layers;
  if (j.contains("layer_types") && !j["layer_types"].is_null()) {
    const json& types = j["layer_types"];
    if (!types.is_array() || static_cast<std::int64_t>(types.size()) != L) {
      errors += "\n" + where + ": layer_types: expected a list of num_hidden_layers (" + std::to_string(L) +
                ") entries, got " +
                (types.is_array() ? std::to_string(types.size()) + " entries" : types.dump());
      return;
    }
    for (std::int64_t l = 0; l < L; ++l) {
      const json& t = types[static_cast<std::size_t>(l)];
      const std::string at = where + ": layer_types[" + std::to_string(l) + "]: ";
      if (t == "sliding_attention") {
        if (!window)
          errors += "\n" + at +
                    "\"sliding_attention\" needs use_sliding_window: true and an integer sliding_window";
        c.sliding_layers.push_back(l);
      } else if (t != "full_attention") {
        errors += "\n" + at + t.dump() + " is not supported (\"full_attention\" or \"sliding_attention\")";
      }
    }
  } else if (window) {
    const std::int64_t first = get_int(j, "max_window_layers", 28, where, errors);
    for (std::int64_t l = first; l < L; ++l) c.sliding_layers.push_back(l);
  }
  if (c.sliding_layers.empty() || !window) return;
  c.sliding_window = window;
  if (*window >= c.max_position_embeddings) return;  // no sequence can reach past the window
  std::string layers;
  for (auto l : c.sliding_layers) layers += (layers.empty() ? "" : ",") + std::to_string(l);
  warn_once(where + ": use_sliding_window: true: transformers attends within the last " +
            std::to_string(*window) + " tokens in layers " + layers +
            "; sft attends to the whole sequence, which is the same only for " + "sequences of at most " +
            std::to_string(*window) + " tokens (max_position_embeddings is " +
            std::to_string(c.max_position_embeddings) + ")");
}

// transformers >= 5 writes the rope settings only inside "rope_parameters" (rope_theta,
// rope_type and its factors); older writers (and sft) use top-level rope_theta/rope_scaling.
bool has_rope_parameters(const json& j) {
  return j.contains("rope_parameters") && j["rope_parameters"].is_object();
}

// What sft does not implement: another activation, biases where the model type reads them.
void check_unsupported(const json& j, const LlamaConfig& c, const std::string& where, std::string& errors) {
  if (j.contains("hidden_act") && j["hidden_act"] != "silu")
    errors += "\n" + where + ": hidden_act: " + j["hidden_act"].dump() + " is not supported (only \"silu\")";
  // LLaMA reads both flags; Qwen3 reads attention_bias (which would bias o_proj too), its
  // MLP never has biases; Qwen2's biases are fixed by the architecture (q, k and v always,
  // nothing else) and transformers ignores both keys there.
  for (const std::string k : {"attention_bias", "mlp_bias"}) {
    const bool read =
        c.model_type == ModelType::kLlama || (c.model_type == ModelType::kQwen3 && k == "attention_bias");
    if (read && j.contains(k) && j[k] == true)
      errors +=
          "\n" + where + ": " + k + ": true is not supported for model_type \"" + c.model_type_name() + "\"";
  }
}

// The sizes, the norm's epsilon, rope_theta and the initializer's range.
void read_sizes(const json& j, LlamaConfig& c, const std::string& where, std::string& errors) {
  c.vocab_size = get_int(j, "vocab_size", c.vocab_size, where, errors, true);
  c.hidden_size = get_int(j, "hidden_size", c.hidden_size, where, errors, true);
  c.intermediate_size = get_int(j, "intermediate_size", c.intermediate_size, where, errors, true);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", c.num_hidden_layers, where, errors, true);
  c.num_attention_heads = get_int(j, "num_attention_heads", c.num_attention_heads, where, errors, true);
  c.num_key_value_heads = get_int(j, "num_key_value_heads", c.num_attention_heads, where, errors);
  c.max_position_embeddings =
      get_int(j, "max_position_embeddings",
              c.model_type != ModelType::kLlama ? 32768 : c.max_position_embeddings, where, errors);
  c.rms_norm_eps = get_num(j, "rms_norm_eps", c.rms_norm_eps, where, errors);
  if (!j.contains("rope_theta") && has_rope_parameters(j) && j["rope_parameters"].contains("rope_theta"))
    c.rope_theta =
        get_num(j["rope_parameters"], "rope_theta", c.rope_theta, where + ": rope_parameters", errors);
  else
    c.rope_theta = get_num(j, "rope_theta", c.rope_theta, where, errors);
  c.initializer_range = get_num(j, "initializer_range", c.initializer_range, where, errors);
}

// Tied embeddings, the special tokens and the stored dtype.
void read_tokens_and_dtype(const json& j, LlamaConfig& c, const std::string& where, std::string& errors) {
  if (j.contains("tie_word_embeddings") && !j["tie_word_embeddings"].is_null()) {
    if (!j["tie_word_embeddings"].is_boolean())
      errors += "\n" + where + ": tie_word_embeddings: expected true or false";
    else
      c.tie_word_embeddings = j["tie_word_embeddings"];
  }
  c.bos_token_id = get_int(j, "bos_token_id", c.bos_token_id, where, errors);
  if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    const auto& e = j["eos_token_id"];
    c.eos_token_ids.clear();
    if (e.is_number_integer())
      c.eos_token_ids.push_back(e.get<std::int64_t>());
    else if (e.is_array())
      for (const auto& x : e) {
        if (x.is_number_integer())
          c.eos_token_ids.push_back(x.get<std::int64_t>());
        else
          errors += "\n" + where + ": eos_token_id: expected integers";
      }
    else
      errors += "\n" + where + ": eos_token_id: expected an integer or a list of integers";
  }
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) {
    c.torch_dtype = j["torch_dtype"];
    if (c.torch_dtype != "float32" && c.torch_dtype != "bfloat16" && c.torch_dtype != "float16")
      errors += "\n" + where + ": torch_dtype: \"" + c.torch_dtype +
                "\" is not supported (float32, bfloat16, float16)";
  }
}

// head_dim, then the checks of the shape as a whole and of each size's range.
void check_shape(const json& j, LlamaConfig& c, const std::string& where, std::string& errors) {
  if (c.model_type == ModelType::kQwen3) {
    c.head_dim = get_int(j, "head_dim", 128, where, errors);  // Qwen3Config's default, not hidden / heads
  } else if (c.num_attention_heads > 0) {
    c.head_dim = get_int(j, "head_dim", c.hidden_size / c.num_attention_heads, where, errors);
    if (!j.contains("head_dim") && c.hidden_size % c.num_attention_heads != 0)
      errors += "\n" + where + ": hidden_size: " + std::to_string(c.hidden_size) +
                " is not divisible by num_attention_heads " + std::to_string(c.num_attention_heads);
  }
  if (c.head_dim % 2 != 0) errors += "\n" + where + ": head_dim: must be even for rotary embeddings";
  if (c.num_key_value_heads == 0 || c.num_attention_heads % c.num_key_value_heads != 0)
    errors += "\n" + where + ": num_key_value_heads: " + std::to_string(c.num_key_value_heads) +
              " must divide num_attention_heads " + std::to_string(c.num_attention_heads);
  for (const char* k : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                        "num_attention_heads", "head_dim"})
    if (j.contains(k) && j[k].is_number_integer() && j[k].get<std::int64_t>() == 0)
      errors += "\n" + where + ": " + k + ": must be positive";
  // Bounds far above any real model, so that sizes and parameter counts stay exact in int64.
  const std::pair<const char*, std::int64_t> limits[] = {{"vocab_size", 1 << 24},
                                                         {"hidden_size", 1 << 20},
                                                         {"intermediate_size", 1 << 22},
                                                         {"num_hidden_layers", 1 << 14},
                                                         {"num_attention_heads", 1 << 14},
                                                         {"num_key_value_heads", 1 << 14},
                                                         {"head_dim", 1 << 14},
                                                         {"max_position_embeddings", 1 << 24}};
  for (const auto& [k, most] : limits)
    if (j.contains(k) && j[k].is_number_integer() && j[k].get<std::int64_t>() > most)
      errors += "\n" + where + ": " + k + ": " + j[k].dump() + " is beyond " + std::to_string(most) +
                ", the most sft accepts";
  auto positive = [&](const char* k, double v) {
    if (!(std::isfinite(v) && v > 0))
      errors += "\n" + where + ": " + k + ": " + std::to_string(v) + " must be a positive number";
  };
  positive("rms_norm_eps", c.rms_norm_eps);
  positive("rope_theta", c.rope_theta);
  if (!(std::isfinite(c.initializer_range) && c.initializer_range >= 0))
    errors += "\n" + where + ": initializer_range: must be a finite number >= 0";
}

// rope_scaling (or a non-default rope_parameters): llama3 or linear.
void read_rope_scaling(const json& j, LlamaConfig& c, const std::string& where, std::string& errors) {
  const nlohmann::json* scaling = nullptr;
  std::string scaling_key = "rope_scaling";
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    scaling = &j["rope_scaling"];
  } else if (has_rope_parameters(j) && j["rope_parameters"].value("rope_type", "default") != "default") {
    scaling = &j["rope_parameters"];
    scaling_key = "rope_parameters";
  }
  if (scaling && !scaling->is_object()) {
    errors += "\n" + where + ": " + scaling_key +
              ": expected an object such as {rope_type: linear, factor: 2.0}, got " + scaling->dump();
  } else if (scaling) {
    const auto& rs = *scaling;
    const std::string ctx = where + ": " + scaling_key;
    std::string type = rs.value("rope_type", rs.value("type", ""));
    if (type == "llama3" || type == "linear") {
      RopeScaling s;
      s.type = type == "linear" ? RopeScalingType::kLinear : RopeScalingType::kLlama3;
      s.factor = get_num(rs, "factor", 1.0, ctx, errors);
      if (type == "llama3") {
        s.low_freq_factor = get_num(rs, "low_freq_factor", 1.0, ctx, errors);
        s.high_freq_factor = get_num(rs, "high_freq_factor", 4.0, ctx, errors);
        s.original_max_position_embeddings =
            get_int(rs, "original_max_position_embeddings", 8192, ctx, errors);
        if (s.high_freq_factor <= s.low_freq_factor)
          errors += "\n" + ctx + ".high_freq_factor must exceed low_freq_factor";
      }
      if (s.factor <= 0) errors += "\n" + ctx + ".factor must be positive";
      c.rope_scaling = s;
    } else {
      errors += "\n" + ctx + ": type \"" + type + "\" is not supported (llama3, linear)";
    }
  }
}

}  // namespace

const char* LlamaConfig::model_type_name() const { return names_of(model_type).model_type; }
const char* LlamaConfig::architecture() const { return names_of(model_type).architecture; }

LlamaConfig LlamaConfig::from_json(const json& j, const std::string& where) {
  if (!j.is_object()) throw ConfigError(where + ": expected a JSON object of config.json fields");
  LlamaConfig c;
  c.raw = j;
  std::string errors;
  c.model_type = read_model_type(j, where, errors);
  check_unsupported(j, c, where, errors);
  read_sizes(j, c, where, errors);
  read_tokens_and_dtype(j, c, where, errors);
  check_shape(j, c, where, errors);
  read_rope_scaling(j, c, where, errors);
  if (c.model_type != ModelType::kLlama) read_sliding_window(j, c, where, errors);
  if (!errors.empty()) throw ConfigError(errors.substr(1));
  return c;
}

json LlamaConfig::to_json() const {
  json j = raw.is_object() ? raw : json::object();
  j["architectures"] = {architecture()};
  j["model_type"] = model_type_name();
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  if (qk_norm() || j.contains("head_dim") || head_dim * num_attention_heads != hidden_size)
    j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1)
    j["eos_token_id"] = eos_token_ids[0];
  else
    j["eos_token_id"] = eos_token_ids;
  j["torch_dtype"] = torch_dtype;
  j["hidden_act"] = "silu";
  j["initializer_range"] = initializer_range;
  if (!j.contains("attention_bias") && model_type != ModelType::kQwen2) j["attention_bias"] = false;
  if (!j.contains("rope_scaling")) j["rope_scaling"] = nullptr;
  return j;
}

std::int64_t LlamaConfig::num_layer_parameters() const {
  const std::int64_t qkv = (num_attention_heads + 2 * num_key_value_heads) * head_dim;
  const std::int64_t attn = hidden_size * qkv + num_attention_heads * head_dim * hidden_size;
  const std::int64_t bias = qkv_bias() ? qkv : 0, qk_norms = qk_norm() ? 2 * head_dim : 0;
  const std::int64_t mlp = 3 * hidden_size * intermediate_size;
  return attn + bias + qk_norms + mlp + 2 * hidden_size;
}

std::int64_t LlamaConfig::num_parameters() const {
  std::int64_t head = tie_word_embeddings ? 0 : vocab_size * hidden_size;
  return vocab_size * hidden_size + num_hidden_layers * num_layer_parameters() + hidden_size + head;
}

LlamaConfig load_llama_config(const std::string& dir) {
  std::string path = fs::join(dir, "config.json");
  if (!fs::exists(path)) throw ConfigError(path + ": not found (expected a Hugging Face model folder)");
  json j;
  try {
    j = json::parse(fs::read_file(path));
  } catch (const json::parse_error& e) {
    throw ConfigError(path + ": malformed JSON: " + json_error_text(e));
  }
  return LlamaConfig::from_json(j, path);
}

}  // namespace sft::model
