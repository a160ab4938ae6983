// The LLaMA model against the independent reference (scripts/make_reference.py), and its
// invariants: packing, attention paths, KV cache, activation checkpointing, config errors.
#include "sft/model/llama.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "sft/model/generate.h"
#include "sft/model/hf_checkpoint.h"
#include "sft/model/precision.h"
#include "sft/util/error.h"
#include "test_util.h"

namespace sft::model {
namespace {

std::string fixture(const std::string& name) {
  return test::source_dir() + "/tests/fixtures/reference/" + name;
}

nlohmann::json expected(const std::string& name) {
  return nlohmann::json::parse(test::read(fixture(name) + "/expected.json"));
}

class Reference : public ::testing::TestWithParam<const char*> {};

TEST_P(Reference, LogProbsMatchTheIndependentImplementation) {
  auto m = load_hf_model(fixture(GetParam()));
  for (const auto& seq : expected(GetParam())["sequences"]) {
    auto ids = seq["ids"].get<std::vector<std::int64_t>>();
    auto lp = score(*m, ids);
    ASSERT_EQ(lp.size(), ids.size());
    EXPECT_FALSE(lp[0].has_value());
    double worst = 0;
    for (std::size_t i = 1; i < ids.size(); ++i)
      worst = std::max(worst, std::abs(*lp[i] - seq["logprobs"][i].get<double>()));
    EXPECT_LE(worst, 2e-4) << GetParam() << " sequence of " << ids.size();
  }
}

TEST_P(Reference, Bf16AutocastStaysCloseToFp32) {
  auto m = load_hf_model(fixture(GetParam()));
  auto ids = expected(GetParam())["sequences"][0]["ids"].get<std::vector<std::int64_t>>();
  auto a = score(*m, ids, false), b = score(*m, ids, true);
  double mean_err = 0;
  for (std::size_t i = 1; i < ids.size(); ++i) mean_err += std::abs(*a[i] - *b[i]);
  mean_err /= static_cast<double>(ids.size() - 1);
  EXPECT_LT(mean_err, 0.1) << GetParam();
  EXPECT_GT(mean_err, 0.0) << "bf16 autocast had no effect";
}

TEST_P(Reference, SdpaAndExplicitAttentionAgree) {
  auto m = load_hf_model(fixture(GetParam()));
  auto ids = expected(GetParam())["sequences"][1]["ids"].get<std::vector<std::int64_t>>();
  m->set_attention_impl(AttentionImpl::kExplicit);
  auto a = score(*m, ids);
  m->set_attention_impl(AttentionImpl::kSdpa);
  auto b = score(*m, ids);
  for (std::size_t i = 1; i < ids.size(); ++i) EXPECT_NEAR(*a[i], *b[i], 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Reference,
                         ::testing::Values("mha_f32", "gqa_bf16_sharded", "mqa_f16_tied_llama3"));

TEST(Llama, PackedSamplesGiveTheSameLogitsAsSeparateOnes) {
  for (auto impl : {AttentionImpl::kExplicit, AttentionImpl::kSdpa}) {
    auto m = load_hf_model(fixture("gqa_bf16_sharded"));
    m->set_attention_impl(impl);
    at::NoGradGuard ng;
    std::vector<std::int64_t> a = {1, 17, 33, 90, 4, 250, 7}, b = {1, 200, 5, 6}, c = {1, 42, 43, 44, 45, 46};
    std::vector<std::int64_t> packed;
    std::vector<std::int64_t> pos;
    std::vector<int> seg;
    int k = 0;
    for (const auto* s : {&a, &b, &c}) {
      for (std::size_t t = 0; t < s->size(); ++t) {
        packed.push_back((*s)[t]);
        pos.push_back(static_cast<std::int64_t>(t));
        seg.push_back(k);
      }
      ++k;
    }
    const auto T = static_cast<std::int64_t>(packed.size());
    at::Tensor mask = at::zeros({1, 1, T, T}, at::kBool);
    for (std::int64_t q = 0; q < T; ++q)
      for (std::int64_t kk = 0; kk <= q; ++kk)
        if (seg[static_cast<std::size_t>(q)] == seg[static_cast<std::size_t>(kk)]) mask[0][0][q][kk] = true;
    at::Tensor out = m->forward(at::tensor(packed).view({1, T}), at::tensor(pos).view({1, T}), mask)[0];
    // The same through per-sample (varlen) attention, from segment ids.
    std::vector<std::int32_t> seg32(seg.begin(), seg.end());
    at::Tensor segment_ids = at::tensor(seg32).view({1, T});
    at::Tensor varlen =
        m->forward(at::tensor(packed).view({1, T}), at::tensor(pos).view({1, T}), segment_ids)[0];
    EXPECT_TRUE(at::allclose(out, varlen, 1e-5, 1e-5));
    std::int64_t off = 0;
    for (const auto* s : {&a, &b, &c}) {
      const auto L = static_cast<std::int64_t>(s->size());
      at::Tensor alone = m->forward(at::tensor(*s).view({1, L}), at::arange(L).view({1, L}))[0];
      EXPECT_TRUE(at::allclose(out.slice(0, off, off + L), alone, 1e-5, 1e-5));
      off += L;
    }
  }
}

TEST(Llama, GreedyDecodingWithTheCacheEqualsDecodingWithout) {
  auto m = load_hf_model(fixture("mha_f32"));
  GenerateOptions o;
  o.max_new_tokens = 24;
  std::vector<std::vector<std::int64_t>> prompts = {
      {1, 20, 30, 40, 50}, {1, 9}, {1, 100, 101, 102, 103, 104, 105, 106}};
  auto cached = generate(*m, prompts, o);
  o.use_cache = false;
  auto plain = generate(*m, prompts, o);
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(cached[i].tokens, plain[i].tokens) << "prompt " << i;
    EXPECT_EQ(cached[i].tokens.size(), 24u);
    // Batched with left padding equals one at a time.
    o.use_cache = true;
    auto single = generate(*m, {prompts[i]}, o);
    EXPECT_EQ(single[0].tokens, cached[i].tokens) << "prompt " << i;
  }
}

TEST(Llama, GenerationStopsAtStopTokensAndIsSeededWhenSampling) {
  auto m = load_hf_model(fixture("mha_f32"));
  GenerateOptions o;
  o.max_new_tokens = 16;
  auto greedy = generate(*m, {{1, 20, 30}}, o)[0];
  ASSERT_GE(greedy.tokens.size(), 3u);
  o.stop_ids = {greedy.tokens[2]};
  auto stopped = generate(*m, {{1, 20, 30}}, o)[0];
  EXPECT_EQ(stopped.finish_reason, "stop_token");
  EXPECT_EQ(stopped.tokens.size(),
            std::find(greedy.tokens.begin(), greedy.tokens.end(), greedy.tokens[2]) - greedy.tokens.begin());
  GenerateOptions s;
  s.max_new_tokens = 16;
  s.temperature = 1.0;
  s.top_p = 0.9;
  s.top_k = 50;
  s.seed = 7;
  auto x = generate(*m, {{1, 20, 30}}, s)[0], y = generate(*m, {{1, 20, 30}}, s)[0];
  EXPECT_EQ(x.tokens, y.tokens);
  s.seed = 8;
  EXPECT_NE(generate(*m, {{1, 20, 30}}, s)[0].tokens, x.tokens);
}

TEST(Llama, ActivationCheckpointingGivesTheSameGradients) {
  auto grads = [](bool ckpt, bool bf16) {
    auto m = load_hf_model(fixture("gqa_bf16_sharded"));
    m->set_activation_checkpointing(ckpt);
    at::Tensor ids = at::randint(0, 256, {2, 20}, at::TensorOptions().dtype(at::kLong));
    ids = at::tensor(std::vector<std::int64_t>(40, 3)).view({2, 20}) + at::arange(40).view({2, 20}) % 200;
    at::Tensor pos = at::arange(20).view({1, 20}).expand({2, 20});
    at::Tensor loss;
    {
      AutocastGuard ac(c10::kCPU, at::kBFloat16, bf16);
      loss = m->forward(ids, pos).to(at::kFloat).logsumexp(-1).mean();
    }
    loss.backward();
    std::vector<at::Tensor> g;
    for (const auto& p : m->parameters()) g.push_back(p.tensor.grad().clone());
    return g;
  };
  for (bool bf16 : {false, true}) {
    auto a = grads(false, bf16), b = grads(true, bf16);
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i)
      EXPECT_TRUE(at::allclose(a[i], b[i], 1e-5, 1e-6)) << i << " bf16=" << bf16;
  }
}

// A packed training step reads nothing back to the host per layer: with the plan built
// from the batch's host copy (as the trainer does) the model makes no host reads at all,
// forward and checkpointed backward; left to itself it makes one per micro-batch, whatever
// the number of layers (it used to make one per layer, and again in the recompute). Both
// give the same loss and gradients.
TEST(Llama, APackedStepsHostReadsDoNotGrowWithTheNumberOfLayers) {
  std::vector<std::int32_t> seg(2 * 24, -1);
  for (int t = 0; t < 24; ++t) seg[t] = t < 9 ? 0 : t < 20 ? 1 : -1;
  for (int t = 0; t < 24; ++t) seg[24 + t] = t < 24 ? t / 12 : -1;
  std::vector<std::int64_t> pos(48, 0);
  for (int b = 0; b < 2; ++b)
    for (int t = 0, start = 0; t < 24; ++t) {
      if (t > 0 && seg[b * 24 + t] != seg[b * 24 + t - 1]) start = t;
      pos[b * 24 + t] = seg[b * 24 + t] < 0 ? 0 : t - start;
    }
  const at::Tensor segment_ids = at::tensor(seg).view({2, 24});
  const at::Tensor positions = at::tensor(pos).view({2, 24});
  const at::Tensor ids = (at::arange(48) * 7 % 250 + 1).view({2, 24});
  at::Tensor labels = ids.clone();
  labels.masked_fill_(segment_ids < 0, -100);
  for (std::int64_t layers : {2, 4}) {
    nlohmann::json j = {{"hidden_size", 32},
                        {"intermediate_size", 64},
                        {"num_hidden_layers", layers},
                        {"num_attention_heads", 4},
                        {"num_key_value_heads", 2},
                        {"vocab_size", 256},
                        {"max_position_embeddings", 64}};
    std::vector<double> losses;
    std::vector<at::Tensor> grads;
    for (bool planned : {true, false}) {
      Llama m(LlamaConfig::from_json(j, "test"));
      m.init_weights(1);
      m.set_activation_checkpointing(true);
      const std::int64_t before = m.host_reads();
      if (planned) m.plan_packed(segment_ids, segment_ids);
      at::Tensor loss = m.loss_sum(ids, positions, segment_ids, labels);
      loss.backward();
      EXPECT_EQ(m.host_reads() - before, planned ? 0 : 1) << layers << " layers, planned " << planned;
      losses.push_back(loss.item<double>());
      grads.push_back(m.parameters()[1].tensor.grad().clone());
    }
    EXPECT_EQ(losses[0], losses[1]);
    EXPECT_TRUE(at::equal(grads[0], grads[1]));
  }
}

TEST(Llama, FusedLossMatchesFullLogitsCrossEntropyAndItsGradients) {
  for (const char* f : {"gqa_bf16_sharded", "mqa_f16_tied_llama3"}) {
    auto a = load_hf_model(fixture(f)), b = load_hf_model(fixture(f));
    at::Tensor ids = (at::arange(48).view({2, 24}) * 37 + 5) % 256;
    at::Tensor pos = at::arange(24).view({1, 24}).expand({2, 24});
    at::Tensor labels = ids.roll(-1, 1);
    labels.slice(1, 0, 7).fill_(-100);
    labels.slice(1, 23, 24).fill_(-100);
    at::Tensor fused = a->loss_sum(ids, pos, at::Tensor(), labels);
    fused.backward();
    at::Tensor logits = b->forward(ids, pos).reshape({-1, 256});
    at::Tensor naive = at::cross_entropy_loss(logits, labels.reshape({-1}), {}, at::Reduction::Sum);
    naive.backward();
    EXPECT_NEAR(fused.item<double>(), naive.item<double>(), 1e-3) << f;
    for (std::size_t i = 0; i < a->parameters().size(); ++i)
      EXPECT_TRUE(
          at::allclose(a->parameters()[i].tensor.grad(), b->parameters()[i].tensor.grad(), 1e-4, 1e-5))
          << f << " " << a->parameters()[i].name;
  }
}

TEST(LlamaConfig, UnsupportedFieldsAreErrorsNamingTheField) {
  auto base = nlohmann::json::parse(test::read(fixture("mha_f32") + "/config.json"));
  struct Case {
    const char* key;
    nlohmann::json value;
  };
  for (const auto& c :
       {Case{"model_type", "mistral"}, Case{"hidden_act", "gelu"}, Case{"attention_bias", true},
        Case{"rope_scaling", {{"type", "dynamic"}, {"factor", 2.0}}}, Case{"num_key_value_heads", 3},
        Case{"hidden_size", "64"}, Case{"torch_dtype", "int8"}}) {
    auto j = base;
    j[c.key] = c.value;
    try {
      LlamaConfig::from_json(j, "x/config.json");
      ADD_FAILURE() << c.key;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("x/config.json: ") + c.key), std::string::npos)
          << e.what();
    }
  }
  auto j = base;
  j.erase("hidden_size");
  EXPECT_THROW(LlamaConfig::from_json(j, "x"), ConfigError);
}

TEST(LlamaConfig, ParameterCountMatchesTheModel) {
  for (const char* f : {"mha_f32", "gqa_bf16_sharded", "mqa_f16_tied_llama3"}) {
    auto m = load_hf_model(fixture(f));
    EXPECT_EQ(m->config().num_parameters(), m->num_parameters()) << f;
  }
}

}  // namespace
}  // namespace sft::model
