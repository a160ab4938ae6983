// Qwen2 and Qwen3 in the one model class: the config's model_type and how sliding-window
// fields are read (as transformers 5.x reads them), the parameter list and count, the layer's
// paths (checkpointing, packing, attention kernels, bf16, the cache) on the new weights, and
// HF folders in and out. The comparisons with transformers itself are in
// tests/clients/qwen_transformers_test.cpp.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <nlohmann/json.hpp>

#include "sft/model/generate.h"
#include "sft/model/hf_checkpoint.h"
#include "sft/model/llama.h"
#include "sft/model/precision.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft::model {
namespace {

using nlohmann::json;

// A tiny config of each architecture; head_dim 24 for Qwen3 (hidden 64 / 4 heads = 16).
json tiny(const std::string& type, bool tied = false) {
  json j = {{"model_type", type},         {"hidden_size", 64},
            {"intermediate_size", 96},    {"num_hidden_layers", 2},
            {"num_attention_heads", 4},   {"num_key_value_heads", 2},
            {"vocab_size", 256},          {"max_position_embeddings", 128},
            {"rms_norm_eps", 1e-5},       {"rope_theta", 1000000.0},
            {"tie_word_embeddings", tied}};
  if (type == "qwen3") j["head_dim"] = 24;
  return j;
}

// A model with every weight random, biases and norm weights included (init_weights leaves
// biases at 0 and norms at 1, which would hide a bias or norm that is skipped).
std::unique_ptr<Llama> random_model(const json& j, std::uint64_t seed = 3) {
  auto m = std::make_unique<Llama>(LlamaConfig::from_json(j, "test"));
  at::NoGradGuard ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (const auto& p : m->parameters())
    p.tensor.copy_(p.tensor.dim() == 1 ? at::empty_like(p.tensor).uniform_(0.5, 1.5, gen)
                                       : at::empty_like(p.tensor).normal_(0.0, 0.1, gen));
  return m;
}

std::vector<std::string> names(const Llama& m) {
  std::vector<std::string> out;
  for (const auto& p : m.parameters()) out.push_back(p.name);
  return out;
}

void expect_error(const json& j, const std::string& text) {
  try {
    LlamaConfig::from_json(j, "x/config.json");
    ADD_FAILURE() << "accepted: " << j.dump();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

TEST(QwenConfig, ModelTypeAndArchitecturesSelectTheArchitectureOrAreRefused) {
  EXPECT_EQ(LlamaConfig::from_json(tiny("qwen2"), "t").model_type, ModelType::kQwen2);
  EXPECT_EQ(LlamaConfig::from_json(tiny("qwen3"), "t").model_type, ModelType::kQwen3);
  json j = tiny("qwen2");
  j.erase("model_type");
  j["architectures"] = {"Qwen2ForCausalLM"};
  EXPECT_EQ(LlamaConfig::from_json(j, "t").model_type, ModelType::kQwen2);  // named by the architecture alone
  j.erase("architectures");
  EXPECT_EQ(LlamaConfig::from_json(j, "t").model_type, ModelType::kLlama);  // neither: llama, as always

  json bad = tiny("qwen2");
  bad["model_type"] = "mistral";
  expect_error(bad,
               "x/config.json: model_type: \"mistral\" is not supported (\"llama\", \"qwen2\" or \"qwen3\")");
  bad = tiny("qwen2");
  bad["architectures"] = {"LlamaForCausalLM"};
  expect_error(bad,
               "x/config.json: architectures: \"LlamaForCausalLM\" does not match model_type \"qwen2\" "
               "(expected Qwen2ForCausalLM)");
  bad["architectures"] = {"MistralForCausalLM"};
  expect_error(bad, "x/config.json: architectures: \"MistralForCausalLM\" is not supported");
  bad = tiny("qwen3");
  bad["attention_bias"] = true;  // would bias o_proj as well
  expect_error(bad, "x/config.json: attention_bias: true is not supported for model_type \"qwen3\"");
  // Qwen2's biases are the architecture's: transformers ignores both flags there.
  json q2 = tiny("qwen2");
  q2["attention_bias"] = false;
  q2["mlp_bias"] = true;
  EXPECT_TRUE(LlamaConfig::from_json(q2, "t").qkv_bias());
}

TEST(QwenConfig, Qwen3HeadDimDefaultsTo128AndQwenContextTo32768AsInTransformers) {
  json j = tiny("qwen3");
  j.erase("head_dim");
  j.erase("max_position_embeddings");
  const LlamaConfig c = LlamaConfig::from_json(j, "t");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.max_position_embeddings, 32768);
  j = tiny("qwen2");
  j.erase("max_position_embeddings");
  EXPECT_EQ(LlamaConfig::from_json(j, "t").head_dim, 16);
  EXPECT_EQ(LlamaConfig::from_json(j, "t").max_position_embeddings, 32768);
}

// transformers 5.x (Qwen2Config/Qwen3Config.__post_init__): no window unless
// use_sliding_window; then layer_types, or layers from max_window_layers on, get it.
TEST(QwenConfig, SlidingWindowFieldsAreReadAsTransformersReadsThem) {
  for (const char* type : {"qwen2", "qwen3"}) {
    SCOPED_TRACE(type);
    json j = tiny(type);
    j["sliding_window"] = 32;
    j["max_window_layers"] = 1;
    j["use_sliding_window"] = false;  // every released Qwen2.5 / Qwen3 config
    LlamaConfig c = LlamaConfig::from_json(j, "t");
    EXPECT_FALSE(c.sliding_window.has_value());
    EXPECT_TRUE(c.sliding_layers.empty());

    j["use_sliding_window"] = true;
    c = LlamaConfig::from_json(j, "t");  // window 32 < max_position_embeddings 128: a warning
    EXPECT_EQ(c.sliding_window, 32);
    EXPECT_EQ(c.sliding_layers, std::vector<std::int64_t>({1}));
    j["max_window_layers"] = 28;
    EXPECT_TRUE(LlamaConfig::from_json(j, "t").sliding_layers.empty());
    j.erase("sliding_window");  // transformers' default window, 4096 tokens
    j["max_window_layers"] = 0;
    c = LlamaConfig::from_json(j, "t");
    EXPECT_EQ(c.sliding_window, 4096);
    EXPECT_EQ(c.sliding_layers, std::vector<std::int64_t>({0, 1}));
    j["sliding_window"] = nullptr;  // null: no window at all
    EXPECT_TRUE(LlamaConfig::from_json(j, "t").sliding_layers.empty());

    json t = tiny(type);
    t["layer_types"] = {"sliding_attention", "full_attention"};
    t["use_sliding_window"] = true;
    t["sliding_window"] = 64;
    c = LlamaConfig::from_json(t, "t");
    EXPECT_EQ(c.sliding_layers, std::vector<std::int64_t>({0}));
    t["use_sliding_window"] = false;  // transformers' forward fails on this one (a window of None)
    expect_error(t, "x/config.json: layer_types[0]: \"sliding_attention\" needs use_sliding_window: true");
    t["layer_types"] = {"full_attention", "chunked_attention"};
    expect_error(t, "x/config.json: layer_types[1]: \"chunked_attention\" is not supported");
    t["layer_types"] = {"full_attention"};
    expect_error(
        t, "x/config.json: layer_types: expected a list of num_hidden_layers (2) entries, got 1 entries");
  }
}

TEST(QwenModel, ParametersAreHfsNamesWithQkvAndTheirBiasesSideBySide) {
  const auto q2 = names(Llama(LlamaConfig::from_json(tiny("qwen2"), "t")));
  const std::vector<std::string> layer2 = {
      "input_layernorm.weight",  "self_attn.q_proj.weight", "self_attn.k_proj.weight",
      "self_attn.v_proj.weight", "self_attn.q_proj.bias",   "self_attn.k_proj.bias",
      "self_attn.v_proj.bias",   "self_attn.o_proj.weight", "post_attention_layernorm.weight",
      "mlp.gate_proj.weight",    "mlp.up_proj.weight",      "mlp.down_proj.weight"};
  ASSERT_EQ(q2.size(), 1 + 2 * layer2.size() + 2);
  for (std::size_t i = 0; i < layer2.size(); ++i)
    EXPECT_EQ(q2[1 + layer2.size() + i], "model.layers.1." + layer2[i]);
  const auto q3 = names(Llama(LlamaConfig::from_json(tiny("qwen3", /*tied=*/true), "t")));
  const std::vector<std::string> layer3 = {"input_layernorm.weight",  "self_attn.q_proj.weight",
                                           "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                                           "self_attn.q_norm.weight", "self_attn.k_norm.weight",
                                           "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                                           "mlp.gate_proj.weight",    "mlp.up_proj.weight",
                                           "mlp.down_proj.weight"};
  ASSERT_EQ(q3.size(), 1 + 2 * layer3.size() + 1);  // tied: no lm_head
  for (std::size_t i = 0; i < layer3.size(); ++i) EXPECT_EQ(q3[1 + i], "model.layers.0." + layer3[i]);
  EXPECT_EQ(q3.back(), "model.norm.weight");
}

TEST(QwenModel, TheConfigsParameterCountIsTheModelsAndInitGivesZeroBiases) {
  for (const char* type : {"llama", "qwen2", "qwen3"})
    for (bool tied : {false, true}) {
      Llama m(LlamaConfig::from_json(tiny(type, tied), "t"));
      EXPECT_EQ(m.config().num_parameters(), m.num_parameters()) << type << " tied " << tied;
      std::int64_t units = 0;
      for (std::size_t u = 0; u < m.num_units(); ++u)
        for (std::size_t i : m.unit_params(u)) units += m.parameters()[i].tensor.numel();
      EXPECT_EQ(units, m.num_parameters()) << type;
      m.init_weights(5);
      for (const auto& p : m.parameters()) {
        if (p.name.find(".bias") != std::string::npos)
          EXPECT_EQ(p.tensor.abs().max().item<float>(), 0.0f) << p.name;
        if (p.name.find("norm.weight") != std::string::npos)
          EXPECT_TRUE(at::all(p.tensor == 1).item<bool>()) << p.name;
      }
    }
  // 2 layers x ((4 + 2 + 2) x 16 biases) and 2 layers x (2 x 24 norm weights) beyond the plain layer.
  LlamaConfig q2 = LlamaConfig::from_json(tiny("qwen2"), "t");
  LlamaConfig l2 = q2;
  l2.model_type = ModelType::kLlama;
  EXPECT_EQ(q2.num_parameters() - l2.num_parameters(), 2 * 8 * 16);
  LlamaConfig q3 = LlamaConfig::from_json(tiny("qwen3"), "t");
  LlamaConfig l3 = q3;
  l3.model_type = ModelType::kLlama;
  EXPECT_EQ(q3.num_parameters() - l3.num_parameters(), 2 * 2 * 24);
}

// The bias and the q/k norms are used: changing any changes the logits.
TEST(QwenModel, EveryNewWeightChangesTheLogits) {
  for (const char* type : {"qwen2", "qwen3"}) {
    auto m = random_model(tiny(type));
    at::NoGradGuard ng;
    at::Tensor ids = at::tensor(std::vector<std::int64_t>{1, 7, 80, 33, 9, 200}).view({1, 6});
    at::Tensor pos = at::arange(6).view({1, 6});
    const at::Tensor base = m->forward(ids, pos);
    for (const auto& p : m->parameters()) {
      if (p.name.find(".bias") == std::string::npos && p.name.find("q_norm") == std::string::npos &&
          p.name.find("k_norm") == std::string::npos)
        continue;
      at::Tensor saved = p.tensor.clone();
      p.tensor.add_(0.25);
      EXPECT_GT((m->forward(ids, pos) - base).abs().max().item<double>(), 1e-4) << p.name;
      p.tensor.copy_(saved);
    }
  }
}

TEST(QwenModel, CheckpointingPackingAttentionKernelsBf16AndTheCacheAgree) {
  for (const char* type : {"qwen2", "qwen3"}) {
    SCOPED_TRACE(type);
    // Activation checkpointing: the same gradients, fp32 and bf16 autocast.
    for (bool bf16 : {false, true}) {
      std::vector<std::vector<at::Tensor>> grads;
      for (bool ckpt : {false, true}) {
        auto m = random_model(tiny(type));
        m->set_activation_checkpointing(ckpt);
        at::Tensor ids = (at::arange(40).view({2, 20}) * 13 + 3) % 256;
        at::Tensor pos = at::arange(20).view({1, 20}).expand({2, 20});
        at::Tensor loss;
        {
          AutocastGuard ac(c10::kCPU, at::kBFloat16, bf16);
          loss = m->forward(ids, pos).to(at::kFloat).logsumexp(-1).mean();
        }
        loss.backward();
        grads.emplace_back();
        for (const auto& p : m->parameters()) grads.back().push_back(p.tensor.grad().clone());
      }
      for (std::size_t i = 0; i < grads[0].size(); ++i)
        EXPECT_TRUE(at::allclose(grads[0][i], grads[1][i], 1e-5, 1e-6)) << i << " bf16=" << bf16;
    }
    auto m = random_model(tiny(type));
    at::NoGradGuard ng;
    // Packed rows (per-sample attention) equal separate samples; explicit attention (its
    // 1/sqrt(Dh) folded into q after the norm) equals SDPA.
    std::vector<std::int64_t> a = {1, 17, 33, 90, 4, 250, 7}, b = {1, 200, 5, 6};
    std::vector<std::int64_t> packed(a), pos;
    packed.insert(packed.end(), b.begin(), b.end());
    std::vector<std::int32_t> seg;
    for (std::size_t t = 0; t < a.size(); ++t) pos.push_back(static_cast<std::int64_t>(t)), seg.push_back(0);
    for (std::size_t t = 0; t < b.size(); ++t) pos.push_back(static_cast<std::int64_t>(t)), seg.push_back(1);
    const auto T = static_cast<std::int64_t>(packed.size()), La = static_cast<std::int64_t>(a.size());
    at::Tensor out = m->forward(at::tensor(packed).view({1, T}), at::tensor(pos).view({1, T}),
                                at::tensor(seg).view({1, T}))[0];
    at::Tensor alone = m->forward(at::tensor(a).view({1, La}), at::arange(La).view({1, La}))[0];
    EXPECT_TRUE(at::allclose(out.slice(0, 0, La), alone, 1e-5, 1e-5));
    m->set_attention_impl(AttentionImpl::kExplicit);
    EXPECT_TRUE(at::allclose(m->forward(at::tensor(a).view({1, La}), at::arange(La).view({1, La}))[0], alone,
                             1e-4, 1e-5));
    m->set_attention_impl(AttentionImpl::kAuto);
    // bf16 autocast stays close to fp32.
    std::vector<std::int64_t> ids = {1, 9, 44, 130, 2, 77, 18, 250, 3, 61};
    auto f32 = score(*m, ids, false), b16 = score(*m, ids, true);
    double err = 0;
    for (std::size_t i = 1; i < ids.size(); ++i) err = std::max(err, std::abs(*f32[i] - *b16[i]));
    EXPECT_LT(err, 0.1);
    EXPECT_GT(err, 0.0);
    // Greedy decoding with the cache equals recomputing the prefix.
    GenerateOptions o;
    o.max_new_tokens = 16;
    auto cached = generate(*m, {{1, 20, 30, 40}, {1, 9}}, o);
    o.use_cache = false;
    auto plain = generate(*m, {{1, 20, 30, 40}, {1, 9}}, o);
    for (std::size_t i = 0; i < 2; ++i) EXPECT_EQ(cached[i].tokens, plain[i].tokens);
  }
}

// A gathered ZeRO-3 unit is viewed without copies: a layer over layer_views of the unit's
// flat parameters (q|k|v, their biases and gate|up as stacked views) gives the layer's
// output and gradients over its own parameters. Run through loss_sum with a gatherer that
// serves the flat units of one process.
class OneProcessGatherer : public ParamGatherer {
 public:
  explicit OneProcessGatherer(const Llama& m) {
    for (std::size_t u = 0; u < m.num_units(); ++u) {
      std::vector<at::Tensor> parts;
      for (std::size_t i : m.unit_params(u)) parts.push_back(m.parameters()[i].tensor.detach().reshape({-1}));
      units_.push_back(at::cat(parts).requires_grad_(true));
    }
  }
  at::Tensor gather(std::size_t unit) override { return units_[unit]; }
  void release(std::size_t) override {}
  void regather(std::size_t) override {}
  const at::Tensor& unit(std::size_t u) const { return units_[u]; }

 private:
  std::vector<at::Tensor> units_;
};

TEST(QwenModel, GatheredUnitsViewedAsLayersGiveTheModelsLossAndGradients) {
  for (const char* type : {"qwen2", "qwen3"})
    for (bool ckpt : {false, true}) {
      SCOPED_TRACE(std::string(type) + (ckpt ? " checkpointed" : ""));
      auto m = random_model(tiny(type, /*tied=*/std::string(type) == "qwen2"));
      m->set_activation_checkpointing(ckpt);
      at::Tensor ids = (at::arange(24).view({2, 12}) * 29 + 1) % 256;
      at::Tensor pos = at::arange(12).view({1, 12}).expand({2, 12});
      at::Tensor labels = ids.roll(-1, 1);
      labels.slice(1, 0, 3).fill_(-100);
      at::Tensor own = m->loss_sum(ids, pos, at::Tensor(), labels);
      own.backward();
      OneProcessGatherer g(*m);
      m->set_gatherer(&g);
      at::Tensor sharded = m->loss_sum(ids, pos, at::Tensor(), labels);
      sharded.backward();
      m->set_gatherer(nullptr);
      EXPECT_NEAR(own.item<double>(), sharded.item<double>(), 1e-4);
      for (std::size_t u = 0; u < m->num_units(); ++u) {
        std::vector<at::Tensor> parts;
        for (std::size_t i : m->unit_params(u))
          parts.push_back(m->parameters()[i].tensor.grad().reshape({-1}));
        EXPECT_TRUE(at::allclose(at::cat(parts), g.unit(u).grad(), 1e-4, 1e-5)) << "unit " << u;
      }
    }
}

TEST(QwenCheckpoint, SaveWritesTheArchitectureAndLoadIsBitExact) {
  for (const char* type : {"qwen2", "qwen3"}) {
    SCOPED_TRACE(type);
    auto m = random_model(tiny(type, /*tied=*/true));
    test::TempDir d;
    SaveOptions so;
    so.max_shard_bytes = 20000;  // several shards
    save_hf_model(*m, d.file("m"), so);
    const auto cfg = json::parse(test::read(d.file("m/config.json")));
    EXPECT_EQ(cfg["model_type"], type);
    EXPECT_EQ(cfg["architectures"],
              json::array({std::string(type) == "qwen2" ? "Qwen2ForCausalLM" : "Qwen3ForCausalLM"}));
    if (std::string(type) == "qwen3") {
      EXPECT_EQ(cfg["head_dim"], 24);
      EXPECT_EQ(cfg["attention_bias"], false);
    } else {
      EXPECT_FALSE(cfg.contains("attention_bias"));  // not a Qwen2 field
    }
    auto back = load_hf_model(d.file("m"));
    ASSERT_EQ(back->parameters().size(), m->parameters().size());
    for (std::size_t i = 0; i < m->parameters().size(); ++i)
      EXPECT_TRUE(at::equal(back->parameters()[i].tensor, m->parameters()[i].tensor))
          << m->parameters()[i].name;
    // Another architecture's folder is named tensor by tensor, not loaded.
    json other = cfg;
    other["model_type"] = std::string(type) == "qwen2" ? "qwen3" : "qwen2";
    other["architectures"] =
        json::array({std::string(type) == "qwen2" ? "Qwen3ForCausalLM" : "Qwen2ForCausalLM"});
    other["head_dim"] = 24;
    test::write(d.file("m/config.json"), other.dump());
    try {
      load_hf_model(d.file("m"));
      ADD_FAILURE() << "loaded as the other architecture";
    } catch (const CheckpointError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(std::string(type) == "qwen2" ? "q_norm.weight" : "q_proj.bias"), std::string::npos)
          << msg;
    }
  }
}

}  // namespace
}  // namespace sft::model
