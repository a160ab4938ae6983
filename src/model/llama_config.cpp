#include "sft/model/llama_config.h"

#include <cmath>
#include <utility>

#include "sft/util/error.h"
#include "sft/util/safe_io.h"
#include "sft/util/fs.h"

namespace sft::model {
namespace {

using nlohmann::json;

std::int64_t get_int(const json& j, const char* k, std::int64_t def, const std::string& where, std::string& errors,
                     bool required = false) {
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

}  // namespace

LlamaConfig LlamaConfig::from_json(const json& j, const std::string& where) {
  if (!j.is_object()) throw ConfigError(where + ": expected a JSON object of config.json fields");
  LlamaConfig c;
  c.raw = j;
  std::string errors;
  if (j.contains("model_type") && j["model_type"] != "llama")
    errors += "\n" + where + ": model_type: " + j["model_type"].dump() + " is not supported (only \"llama\")";
  if (j.contains("architectures") && j["architectures"].is_array())
    for (const auto& a : j["architectures"])
      if (a != "LlamaForCausalLM")
        errors += "\n" + where + ": architectures: " + a.dump() + " is not supported (only LlamaForCausalLM)";
  if (j.contains("hidden_act") && j["hidden_act"] != "silu")
    errors += "\n" + where + ": hidden_act: " + j["hidden_act"].dump() + " is not supported (only \"silu\")";
  for (const char* k : {"attention_bias", "mlp_bias"})
    if (j.contains(k) && j[k] == true) errors += "\n" + where + ": " + k + ": true is not supported";

  c.vocab_size = get_int(j, "vocab_size", c.vocab_size, where, errors, true);
  c.hidden_size = get_int(j, "hidden_size", c.hidden_size, where, errors, true);
  c.intermediate_size = get_int(j, "intermediate_size", c.intermediate_size, where, errors, true);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", c.num_hidden_layers, where, errors, true);
  c.num_attention_heads = get_int(j, "num_attention_heads", c.num_attention_heads, where, errors, true);
  c.num_key_value_heads = get_int(j, "num_key_value_heads", c.num_attention_heads, where, errors);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", c.max_position_embeddings, where, errors);
  c.rms_norm_eps = get_num(j, "rms_norm_eps", c.rms_norm_eps, where, errors);
  // transformers >= 5 writes the rope settings only inside "rope_parameters" (rope_theta,
  // rope_type and its factors); older writers (and sft) use top-level rope_theta/rope_scaling.
  const bool has_params = j.contains("rope_parameters") && j["rope_parameters"].is_object();
  if (!j.contains("rope_theta") && has_params && j["rope_parameters"].contains("rope_theta"))
    c.rope_theta = get_num(j["rope_parameters"], "rope_theta", c.rope_theta, where + ": rope_parameters", errors);
  else
    c.rope_theta = get_num(j, "rope_theta", c.rope_theta, where, errors);
  c.initializer_range = get_num(j, "initializer_range", c.initializer_range, where, errors);
  if (j.contains("tie_word_embeddings") && !j["tie_word_embeddings"].is_null()) {
    if (!j["tie_word_embeddings"].is_boolean()) errors += "\n" + where + ": tie_word_embeddings: expected true or false";
    else c.tie_word_embeddings = j["tie_word_embeddings"];
  }
  c.bos_token_id = get_int(j, "bos_token_id", c.bos_token_id, where, errors);
  if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    const auto& e = j["eos_token_id"];
    c.eos_token_ids.clear();
    if (e.is_number_integer()) c.eos_token_ids.push_back(e.get<std::int64_t>());
    else if (e.is_array())
      for (const auto& x : e) {
        if (x.is_number_integer()) c.eos_token_ids.push_back(x.get<std::int64_t>());
        else errors += "\n" + where + ": eos_token_id: expected integers";
      }
    else errors += "\n" + where + ": eos_token_id: expected an integer or a list of integers";
  }
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) {
    c.torch_dtype = j["torch_dtype"];
    if (c.torch_dtype != "float32" && c.torch_dtype != "bfloat16" && c.torch_dtype != "float16")
      errors += "\n" + where + ": torch_dtype: \"" + c.torch_dtype + "\" is not supported (float32, bfloat16, float16)";
  }
  if (c.num_attention_heads > 0) {
    c.head_dim = get_int(j, "head_dim", c.hidden_size / c.num_attention_heads, where, errors);
    if (!j.contains("head_dim") && c.hidden_size % c.num_attention_heads != 0)
      errors += "\n" + where + ": hidden_size: " + std::to_string(c.hidden_size) +
                " is not divisible by num_attention_heads " + std::to_string(c.num_attention_heads);
  }
  if (c.head_dim % 2 != 0) errors += "\n" + where + ": head_dim: must be even for rotary embeddings";
  if (c.num_key_value_heads == 0 || c.num_attention_heads % c.num_key_value_heads != 0)
    errors += "\n" + where + ": num_key_value_heads: " + std::to_string(c.num_key_value_heads) +
              " must divide num_attention_heads " + std::to_string(c.num_attention_heads);
  for (const char* k : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                        "head_dim"})
    if (j.contains(k) && j[k].is_number_integer() && j[k].get<std::int64_t>() == 0)
      errors += "\n" + where + ": " + k + ": must be positive";
  // Bounds far above any real model, so that sizes and parameter counts stay exact in int64.
  const std::pair<const char*, std::int64_t> limits[] = {
      {"vocab_size", 1 << 24},          {"hidden_size", 1 << 20},          {"intermediate_size", 1 << 22},
      {"num_hidden_layers", 1 << 14},   {"num_attention_heads", 1 << 14},  {"num_key_value_heads", 1 << 14},
      {"head_dim", 1 << 14},            {"max_position_embeddings", 1 << 24}};
  for (const auto& [k, most] : limits)
    if (j.contains(k) && j[k].is_number_integer() && j[k].get<std::int64_t>() > most)
      errors += "\n" + where + ": " + k + ": " + j[k].dump() + " is beyond " + std::to_string(most) +
                ", the most sft accepts";
  auto positive = [&](const char* k, double v) {
    if (!(std::isfinite(v) && v > 0)) errors += "\n" + where + ": " + k + ": " + std::to_string(v) + " must be a positive number";
  };
  positive("rms_norm_eps", c.rms_norm_eps);
  positive("rope_theta", c.rope_theta);
  if (!(std::isfinite(c.initializer_range) && c.initializer_range >= 0))
    errors += "\n" + where + ": initializer_range: must be a finite number >= 0";

  const nlohmann::json* scaling = nullptr;
  std::string scaling_key = "rope_scaling";
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    scaling = &j["rope_scaling"];
  } else if (has_params && j["rope_parameters"].value("rope_type", "default") != "default") {
    scaling = &j["rope_parameters"];
    scaling_key = "rope_parameters";
  }
  if (scaling && !scaling->is_object()) {
    errors += "\n" + where + ": " + scaling_key + ": expected an object such as {rope_type: linear, factor: 2.0}, got " +
              scaling->dump();
  } else if (scaling) {
    const auto& rs = *scaling;
    const std::string ctx = where + ": " + scaling_key;
    std::string type = rs.value("rope_type", rs.value("type", ""));
    if (type == "llama3" || type == "linear") {
      RopeScaling s;
      s.type = type;
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
  if (!errors.empty()) throw ConfigError(errors.substr(1));
  return c;
}

json LlamaConfig::to_json() const {
  json j = raw.is_object() ? raw : json::object();
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  if (j.contains("head_dim") || head_dim * num_attention_heads != hidden_size) j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
  else j["eos_token_id"] = eos_token_ids;
  j["torch_dtype"] = torch_dtype;
  j["hidden_act"] = "silu";
  j["initializer_range"] = initializer_range;
  if (!j.contains("attention_bias")) j["attention_bias"] = false;
  if (!j.contains("rope_scaling")) j["rope_scaling"] = nullptr;
  return j;
}

std::int64_t LlamaConfig::num_parameters() const {
  std::int64_t attn = hidden_size * head_dim * (num_attention_heads * 2 + num_key_value_heads * 2);
  std::int64_t mlp = 3 * hidden_size * intermediate_size;
  std::int64_t layer = attn + mlp + 2 * hidden_size;
  std::int64_t head = tie_word_embeddings ? 0 : vocab_size * hidden_size;
  return vocab_size * hidden_size + num_hidden_layers * layer + hidden_size + head;
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
