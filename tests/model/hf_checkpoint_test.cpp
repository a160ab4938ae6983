// Hugging Face folders: load -> save -> load is bit-exact, shards and index, tokenizer files,
// an independent reader agrees, and missing weights fail clearly and early.
#include "sft/model/hf_checkpoint.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include "sft/model/generate.h"
#include "sft/model/safetensors.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft::model {
namespace {

std::string fixture(const std::string& name) {
  return test::source_dir() + "/tests/fixtures/reference/" + name;
}

TEST(HfCheckpoint, LoadSaveLoadIsBitExact) {
  struct Case {
    const char* fixture;
    c10::ScalarType dtype;
    std::int64_t shard;
  };
  for (const auto& c : {Case{"mha_f32", c10::kFloat, 0}, Case{"gqa_bf16_sharded", c10::kBFloat16, 60000},
                        Case{"mqa_f16_tied_llama3", c10::kHalf, 0}}) {
    test::TempDir d;
    auto a = load_hf_model(fixture(c.fixture));
    SaveOptions so;
    so.dtype = c.dtype;
    so.max_shard_bytes = c.shard;
    so.tokenizer_model = test::tiny("tokenizer.model");
    save_hf_model(*a, d.file("out"), so);
    auto b = load_hf_model(d.file("out"));
    ASSERT_EQ(a->parameters().size(), b->parameters().size());
    for (std::size_t i = 0; i < a->parameters().size(); ++i)
      EXPECT_TRUE(at::equal(a->parameters()[i].tensor, b->parameters()[i].tensor))
          << c.fixture << " " << a->parameters()[i].name;
    // The stored bytes equal the original files' tensors (same dtype in, same dtype out).
    auto cfg = nlohmann::json::parse(test::read(d.file("out/config.json")));
    EXPECT_EQ(cfg["architectures"][0], "LlamaForCausalLM");
    EXPECT_EQ(cfg["model_type"], "llama");
    for (const char* f :
         {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"})
      EXPECT_TRUE(fs::exists(d.file(std::string("out/") + f))) << f;
    if (c.shard > 0) {
      auto index = nlohmann::json::parse(test::read(d.file("out/model.safetensors.index.json")));
      EXPECT_GT(index["weight_map"].size(), 10u);
      EXPECT_GT(index["metadata"]["total_size"].get<long>(), 0);
      EXPECT_FALSE(fs::exists(d.file("out/model.safetensors")));
    } else {
      EXPECT_TRUE(fs::exists(d.file("out/model.safetensors")));
    }
    if (cfg["tie_word_embeddings"] == true) {
      auto st = SafetensorsFile::open(d.file("out/model.safetensors"));
      EXPECT_EQ(st->find("lm_head.weight"), nullptr);
    }
  }
}

TEST(HfCheckpoint, AnIndependentReaderScoresTheSavedFolderIdentically) {
  SFT_REQUIRE_PYTHON();
  test::TempDir d;
  // A model sft initialised itself, saved in bf16 with shards.
  auto cfg = load_llama_config(fixture("gqa_bf16_sharded"));
  Llama m(cfg);
  m.init_weights(5);
  SaveOptions so;
  so.dtype = c10::kBFloat16;
  so.max_shard_bytes = 40000;
  save_hf_model(m, d.file("out"), so);
  auto reloaded = load_hf_model(d.file("out"));
  std::vector<std::int64_t> ids = {1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110};
  auto ours = score(*reloaded, ids);
  std::string id_list;
  for (auto i : ids) id_list += (id_list.empty() ? "" : ",") + std::to_string(i);
  auto r = test::run_program({test::python(), test::source_dir() + "/scripts/make_reference.py", "score",
                              d.file("out"), "--ids", id_list},
                             {}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto theirs = nlohmann::json::parse(r.out)["logprobs"];
  for (std::size_t i = 1; i < ids.size(); ++i) EXPECT_NEAR(*ours[i], theirs[i].get<double>(), 2e-4) << i;
}

TEST(HfCheckpoint, MissingUnexpectedAndMismatchedTensorsAreReportedTogether) {
  test::TempDir d;
  auto m = load_hf_model(fixture("mha_f32"));
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& p : m->parameters())
    if (p.name != "model.norm.weight" && p.name != "lm_head.weight")
      tensors.push_back({p.name, p.tensor.detach()});
  tensors.push_back({"model.extra.weight", at::ones({3})});
  tensors[1].second = at::ones({5});  // wrong shape for layer 0's input_layernorm
  fs::make_dirs(d.file("bad"));
  test::write(d.file("bad/config.json"), test::read(fixture("mha_f32") + "/config.json"));
  write_safetensors(d.file("bad/model.safetensors"), tensors);
  try {
    load_hf_model(d.file("bad"));
    FAIL();
  } catch (const CheckpointError& e) {
    std::string w = e.what();
    EXPECT_NE(w.find("missing (2)"), std::string::npos) << w;
    EXPECT_NE(w.find("model.norm.weight"), std::string::npos) << w;
    EXPECT_NE(w.find("lm_head.weight"), std::string::npos) << w;
    EXPECT_NE(w.find("unexpected (1)"), std::string::npos) << w;
    EXPECT_NE(w.find("model.extra.weight"), std::string::npos) << w;
    EXPECT_NE(w.find("model.layers.0.input_layernorm.weight: checkpoint [5], config.json implies [64]"),
              std::string::npos)
        << w;
  }
}

TEST(HfCheckpoint, ScoreOnA7BConfigWithoutWeightsFailsClearlyWithoutAllocating) {
  test::TempDir d;
  nlohmann::json cfg = {{"architectures", {"LlamaForCausalLM"}},
                        {"model_type", "llama"},
                        {"hidden_size", 4096},
                        {"intermediate_size", 11008},
                        {"num_hidden_layers", 32},
                        {"num_attention_heads", 32},
                        {"num_key_value_heads", 32},
                        {"vocab_size", 32000},
                        {"max_position_embeddings", 4096},
                        {"rms_norm_eps", 1e-5},
                        {"torch_dtype", "float16"}};
  test::write(d.file("config.json"), cfg.dump());
  auto r = test::run_sft({"score", "--model", d.path(), "--ids", "1,2,3"}, {}, 60);
  EXPECT_EQ(r.exit_code, 2);  // a model folder the user named is input: bad input, exit 2
  EXPECT_NE(r.err.find("no weights found: expected model.safetensors or model.safetensors.index.json"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("Segmentation"), std::string::npos);
}

TEST(HfCheckpoint, ScoreCliPrintsOneLogprobPerId) {
  auto e = nlohmann::json::parse(test::read(fixture("mha_f32") + "/expected.json"))["sequences"][0];
  std::string ids;
  for (auto i : e["ids"]) ids += (ids.empty() ? "" : ",") + std::to_string(i.get<int>());
  auto r = test::run_sft({"score", "--model", fixture("mha_f32"), "--ids", ids});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["logprobs"].size(), e["ids"].size());
  EXPECT_TRUE(j["logprobs"][0].is_null());
  for (std::size_t i = 1; i < e["ids"].size(); ++i)
    EXPECT_NEAR(j["logprobs"][i].get<double>(), e["logprobs"][i].get<double>(), 2e-4);
}

}  // namespace
}  // namespace sft::model
