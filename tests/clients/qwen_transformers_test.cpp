// Qwen2/Qwen2.5 and Qwen3 against real Hugging Face transformers (the venv's, driven by
// tests/clients/hf_transformers.py): tiny Qwen2ForCausalLM and Qwen3ForCausalLM that
// transformers saves (fp32 and bf16, sharded, tied and untied, rope_theta 1e6, random biases
// and q/k norm weights) score the same in sft; sft's export of a trained tiny Qwen loads in
// AutoModelForCausalLM as the same architecture with the same log-probs; KV-cached greedy
// generation gives transformers' tokens; the dry-run planner counts transformers' parameters.
// Each comparison prints its measured max |delta log-prob| ("[ measured ]").
#include <gtest/gtest.h>

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "hf_client.h"
#include "sft/model/generate.h"
#include "sft/model/hf_checkpoint.h"
#include "sft/model/safetensors.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft {
namespace {

using nlohmann::json;
using namespace test::hf_client;

struct Arch {
  const char* model_type;
  const char* cls;
};
constexpr Arch kArchs[] = {{"qwen2", "Qwen2ForCausalLM"}, {"qwen3", "Qwen3ForCausalLM"}};

// sft's log-probabilities of a sequence (`ours`) equal transformers' (`theirs`) within
// kTolerance; the largest difference is reported as measured.
void expect_same_logprobs(const std::string& what, const json& ours, const json& theirs) {
  const double diff = max_diff(ours, theirs);
  std::cout << "[ measured ] " << what << ": max |delta log-prob| = " << diff << "\n";
  EXPECT_LT(diff, kTolerance) << what << "\nsft " << ours["logprobs"].dump() << "\ntransformers "
                              << theirs["logprobs"].dump();
}

// transformers saves a tiny model of `arch` into dir (sharded, 40 KB shards) and scores it.
json save(const std::string& dir, const Arch& arch, const std::string& dtype,
          std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"save",         dir,       "--arch", arch.model_type, "--dtype", dtype,
                                   "--rope-theta", "1000000", "--ids",  sequence()};
  args.insert(args.end(), extra.begin(), extra.end());
  return hf(args);
}

TEST(TransformersQwen, ShardedFp32AndBf16TiedAndUntiedSavesScoreTheSameInSft) {
  SFT_REQUIRE_PYTHON();
  struct Case {
    const char* dtype;
    const char* st_dtype;
    bool tied;
  };
  for (const Arch& arch : kArchs)
    for (const Case& c : {Case{"float32", "F32", false}, Case{"bfloat16", "BF16", true}}) {
      const std::string what = std::string(arch.model_type) + " " + c.dtype + (c.tied ? " tied" : " untied");
      SCOPED_TRACE(what);
      test::TempDir d;
      const std::string dir = d.file("m");
      std::vector<std::string> extra;
      if (c.tied) extra.push_back("--tied");
      auto theirs = save(dir, arch, c.dtype, extra);
      ASSERT_TRUE(theirs.is_object());
      expect_clean_load(theirs, arch.cls);
      // The folder is what the claim is about: the architecture, several shards, the dtype.
      const json& cfg = theirs["saved_config"];
      EXPECT_EQ(cfg["model_type"], arch.model_type);
      EXPECT_EQ(cfg["architectures"][0], arch.cls);
      EXPECT_EQ(cfg.value("tie_word_embeddings", false), c.tied);
      if (std::string(arch.model_type) == "qwen3")
        EXPECT_EQ(cfg["head_dim"], 24);  // hidden 64 / 4 heads = 16
      ASSERT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
      const auto index = json::parse(test::read(dir + "/model.safetensors.index.json"));
      if (std::string(arch.model_type) == "qwen2") {
        EXPECT_TRUE(index["weight_map"].contains("model.layers.1.self_attn.q_proj.bias"));
        EXPECT_TRUE(index["weight_map"].contains("model.layers.1.self_attn.v_proj.bias"));
      } else {
        EXPECT_TRUE(index["weight_map"].contains("model.layers.1.self_attn.q_norm.weight"));
        EXPECT_TRUE(index["weight_map"].contains("model.layers.1.self_attn.k_norm.weight"));
      }
      int shards = 0;
      for (const auto& f : fs::list_dir(dir)) {
        if (f.size() < 12 || f.substr(f.size() - 12) != ".safetensors") continue;
        ++shards;
        auto st = model::SafetensorsFile::open(dir + "/" + f);
        for (const auto& t : st->header().tensors) EXPECT_EQ(t.dtype, c.st_dtype) << f << " " << t.name;
      }
      EXPECT_GE(shards, 3);
      // rope_theta 1e6 matters at these positions: the default rope scores differently.
      json plain = {{"logprobs", theirs["logprobs_with_default_rope"]}};
      EXPECT_GT(max_diff(theirs, plain), 1e-2);

      auto ours = sft_score({"--model", dir, "--ids", sequence()});
      ASSERT_TRUE(ours.is_object());
      EXPECT_GT(spread(theirs), 1.0);
      expect_same_logprobs(what + " saved by transformers, scored by sft", ours, theirs);
    }
}

// A few real `sft train` steps on the shipped tiny data, exported: a qwen2 model from random
// init (model.config, tied embeddings) and a qwen3 one fine-tuned from a folder transformers
// saved (model.path, vocabulary 1024 to fit the tiny tokenizer). AutoModelForCausalLM loads
// each as its architecture, every tensor used, and scores it as sft does.
TEST(TransformersQwen, SftExportOfATrainedQwenLoadsInAutoModelWithTheSameLogProbs) {
  SFT_REQUIRE_PYTHON();
  for (const Arch& arch : kArchs) {
    const std::string type = arch.model_type;
    SCOPED_TRACE(type);
    test::TempDir d;
    std::vector<std::string> sets = {"train.precision=fp32", "train.threads=1", "train.max_steps=3",
                                     "train.warmup_ratio=0", "train.export_stage_models=false"};
    if (type == "qwen2") {
      sets.insert(sets.end(), {"model.config.model_type=qwen2", "model.config.tie_word_embeddings=true",
                               "model.config.rope_theta=1000000"});
    } else {
      auto saved = save(d.file("base"), arch, "float32", {"--vocab-size", "1024"});
      ASSERT_TRUE(saved.is_object());
      sets.insert(sets.end(), {"model.path=" + d.file("base"), "model.config=null"});
    }
    auto run = test::run_sft(test::tiny_train_args(d.file("run"), d.file("cache"), sets), {}, 600);
    ASSERT_EQ(run.exit_code, 0) << run.err;
    const std::string final_dir = d.file("run/final");
    const auto cfg = json::parse(test::read(final_dir + "/config.json"));
    EXPECT_EQ(cfg["model_type"], type);
    EXPECT_EQ(cfg["architectures"], json::array({arch.cls}));

    auto ours =
        sft_score({"--model", final_dir, "--text",
                   "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
                   "in May. How many clips did Natalia sell altogether in April and May?"});
    ASSERT_TRUE(ours.is_object());
    ASSERT_GT(ours["ids"].size(), 20u);
    auto theirs = hf({"score", final_dir, "--ids", csv(ours["ids"])});
    ASSERT_TRUE(theirs.is_object());
    expect_clean_load(theirs, arch.cls);
    EXPECT_EQ(theirs["model_type"], type);
    EXPECT_EQ(theirs["rope_theta"], 1000000.0);
    EXPECT_EQ(theirs["tie_word_embeddings"], type == "qwen2");
    EXPECT_GT(spread(ours), 0.5);
    expect_same_logprobs(type + " trained by sft (3 steps), exported, scored by transformers", ours, theirs);
  }
}

// Greedy decoding with sft's KV cache (model::generate, one prompt and a batch with left
// padding) gives transformers' model.generate tokens, token for token, in fp32.
TEST(TransformersQwen, KvCachedGreedyGenerationEqualsTransformersTokenForToken) {
  SFT_REQUIRE_PYTHON();
  const std::vector<std::vector<std::int64_t>> prompts = {{1, 17, 300, 42, 9, 250, 77}, {1, 5}};
  for (const Arch& arch : kArchs) {
    SCOPED_TRACE(arch.model_type);
    test::TempDir d;
    ASSERT_TRUE(save(d.file("m"), arch, "float32").is_object());
    auto m = model::load_hf_model(d.file("m"));
    model::GenerateOptions o;
    o.max_new_tokens = 32;
    const auto batched = model::generate(*m, prompts, o);
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      auto theirs = hf({"generate", d.file("m"), "--ids", csv(json(prompts[i])), "--max-new-tokens", "32"});
      ASSERT_TRUE(theirs.is_object());
      EXPECT_EQ(theirs["class"], arch.cls);
      const auto single = model::generate(*m, {prompts[i]}, o)[0].tokens;
      EXPECT_EQ(json(single), theirs["tokens"]) << "prompt " << i;
      EXPECT_EQ(batched[i].tokens, single) << "prompt " << i << " in a batch";
      std::cout << "[ measured ] " << arch.model_type << " greedy, prompt " << i << ": sft "
                << json(single).dump() << " transformers " << theirs["tokens"].dump() << "\n";
    }
  }
}

// `sft train --dry-run --json` of a run on a transformers-saved folder counts exactly the
// parameters transformers counts (num_parameters(): biases, q/k norms, a tied head once), and
// plans the memory of exactly those.
TEST(TransformersQwen, TheDryRunCountsTheParametersTransformersCounts) {
  SFT_REQUIRE_PYTHON();
  for (const Arch& arch : kArchs)
    for (bool tied : {false, true}) {
      SCOPED_TRACE(std::string(arch.model_type) + (tied ? " tied" : " untied"));
      test::TempDir d;
      std::vector<std::string> extra = {"--vocab-size", "1024"};
      if (tied) extra.push_back("--tied");
      auto theirs = save(d.file("m"), arch, "float32", extra);
      ASSERT_TRUE(theirs.is_object());
      auto r =
          test::run_sft({"train", "--dry-run", "--json", "--config", "configs/tiny/dmt.yaml", "--output-dir",
                         d.file("run"), "--set", "model.path=" + d.file("m"), "--set", "model.config=null"},
                        {}, 300);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      const auto plan = json::parse(r.out);
      EXPECT_EQ(plan["model"]["model_type"], arch.model_type);
      EXPECT_EQ(plan["model"]["parameters"], theirs["num_parameters"]);
      // The planner's weights are the flat layout's (one rank: no padding): fp32 master
      // weights of exactly those parameters.
      EXPECT_NEAR(plan["memory_per_rank"]["weights_gib"].get<double>() * 1024 * 1024 * 1024 / 4,
                  theirs["num_parameters"].get<double>(), 0.5);
    }
}

}  // namespace
}  // namespace sft
