// Real Hugging Face transformers (the venv's, driven by tests/clients/hf_transformers.py)
// against sft's model folders, both ways: a folder sft exports after training loads in
// AutoModelForCausalLM and AutoTokenizer with the same log-probs and token ids, and folders
// that transformers saves (sharded, grouped-query attention, fp32 and bf16) score the same
// in `sft score`.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "sft/model/safetensors.h"
#include "sft/util/fs.h"
#include "hf_client.h"
#include "test_util.h"

namespace sft {
namespace {

using nlohmann::json;
using namespace test::hf_client;

// One short real training run (2 optimizer steps) whose export, DIR/final, the tests share.
struct Export {
  std::unique_ptr<test::TempDir> dir;
  test::RunResult run;
  std::string final_dir;
};

const Export& sft_export() {
  static Export e = [] {
    Export x;
    x.dir = std::make_unique<test::TempDir>();
    x.final_dir = x.dir->file("run/final");
    // rope_theta other than transformers' default, so the export's config.json must carry it.
    x.run =
        test::run_sft(test::tiny_train_args(x.dir->file("run"), x.dir->file("cache"),
                                            {"train.precision=fp32", "train.threads=1", "train.max_steps=2",
                                             "train.warmup_ratio=0", "train.export_stage_models=false",
                                             "model.config.rope_theta=500000"}),
                      {}, 300);
    return x;
  }();
  return e;
}

TEST(Transformers, SftExportLoadsInAutoModelWithTheSameLogProbs) {
  SFT_REQUIRE_PYTHON();
  const Export& e = sft_export();
  ASSERT_EQ(e.run.exit_code, 0) << e.run.err;
  ASSERT_TRUE(fs::exists(e.final_dir + "/model.safetensors"));
  auto ours =
      sft_score({"--model", e.final_dir, "--text",
                 "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
                 "May. How many clips did Natalia sell altogether in April and May?"});
  ASSERT_TRUE(ours.is_object());
  ASSERT_GT(ours["ids"].size(), 20u);
  auto theirs = hf({"score", e.final_dir, "--ids", csv(ours["ids"])});
  ASSERT_TRUE(theirs.is_object());
  expect_clean_load(theirs);
  EXPECT_EQ(theirs["rope_theta"], 500000.0);
  EXPECT_EQ(theirs["tie_word_embeddings"], false);
  EXPECT_GT(spread(ours), 0.5);
  EXPECT_LT(max_diff(ours, theirs), kTolerance)
      << "sft " << ours["logprobs"].dump() << "\ntransformers " << theirs["logprobs"].dump();
}

// The general eval's open_turn_likelihood (the miniature study's general metric) against
// transformers scoring the reference answers in FastChat's vicuna_v1.1 rendering.
TEST(Transformers, GeneralEvalLikelihoodsMatchTransformersWithFastChatsTemplate) {
  SFT_REQUIRE_PYTHON();
  const Export& e = sft_export();
  ASSERT_EQ(e.run.exit_code, 0) << e.run.err;
  const std::string test_file = ::sft::test::source_dir() + "/data/tiny/general_test.json";
  const std::string out = e.dir->file("general_eval.json");
  auto r = ::sft::test::run_program(
      {::sft::test::sft_binary(), "eval", "--model", e.final_dir, "--benchmark", "general", "--data",
       test_file, "--limit", "60", "--max-new-tokens", "4", "--template", "vicuna_v1.1", "--out", out},
      {{"OMP_NUM_THREADS", "1"}}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json ours = json::parse(::sft::test::read(out))["summary"];
  const json theirs =
      run_json({::sft::test::python(), ::sft::test::source_dir() + "/tests/clients/likelihood_check.py",
                e.final_dir, test_file, "60"});
  ASSERT_TRUE(theirs.is_object());
  ASSERT_GT(theirs["open_turn_reference_tokens"].get<int>(), 100);
  ASSERT_GT(theirs["constant_turn_reference_tokens"].get<int>(), 20);
  EXPECT_EQ(ours["open_turn_reference_tokens"], theirs["open_turn_reference_tokens"]);
  for (const char* k : {"open_turn_likelihood", "constant_turn_likelihood"}) {
    const double a = ours[k].get<double>(), b = theirs[k].get<double>();
    EXPECT_GT(a, 0.0) << k;
    EXPECT_LT(std::fabs(std::log(a) - std::log(b)), kTolerance)
        << k << ": sft " << a << ", transformers " << b;
  }
}

TEST(Transformers, SftExportTokenizerEncodesLikeSftInAutoTokenizer) {
  SFT_REQUIRE_PYTHON();
  const Export& e = sft_export();
  ASSERT_EQ(e.run.exit_code, 0) << e.run.err;
  // None starts with whitespace: there the tokenizers Metaspace pre-tokenizer transformers
  // builds adds no dummy prefix ("▁" already leads) while sentencepiece does, so " a" differs.
  // None contains "</s>" either, which transformers reads as EOS and sentencepiece as text.
  std::vector<std::string> texts = {
      "Hello world",
      "What is 12 * 7 + 345? The answer is 429.",
      "def add(a, b):\n    return a + b\n",
      "two  spaces,\ttabs\n\nand a blank line",
      "trailing space ",
      "Ünïcödé, emoji 😀 and 中文 fall back to bytes",
  };
  // The prompts sft generates from for two shipped test records (vicuna_v1.1): their text,
  // and the ids sft renders for them with the exported tokenizer.
  const std::size_t first_prompt = texts.size();
  std::vector<json> rendered;
  for (const auto& [format, file] : std::vector<std::pair<std::string, std::string>>{
           {"gsm8k", "data/tiny/math_test.jsonl"}, {"sharegpt", "data/tiny/general_test.json"}}) {
    auto r =
        run_json({test::sft_binary(), "data", "render", "--format", format, "--template", "vicuna_v1.1", file,
                  "--index", "0", "--generation", "--json", "--tokenizer", e.final_dir + "/tokenizer.model"});
    ASSERT_TRUE(r.is_object());
    texts.push_back(r["text"].get<std::string>());
    rendered.push_back(r["ids"]);
  }
  test::TempDir d;
  std::string lines;
  for (const auto& t : texts) lines += json{{"text", t}}.dump() + "\n";
  test::write(d.file("texts.jsonl"), lines);

  // sft's ids: BOS + its tokenizer's encoding of each text (score --input prints them).
  auto r = test::run_program({test::sft_binary(), "score", "--model", e.final_dir, "--input",
                              d.file("texts.jsonl"), "--device", "cpu", "--threads", "1"},
                             {}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<json> ours;
  std::istringstream out(r.out);
  for (std::string line; std::getline(out, line);) ours.push_back(json::parse(line)["ids"]);
  ASSERT_EQ(ours.size(), texts.size());

  auto theirs = hf({"tokenize", e.final_dir, "--input", d.file("texts.jsonl")});
  ASSERT_TRUE(theirs.is_object());
  EXPECT_EQ(theirs["class"], "LlamaTokenizer");
  auto cfg = json::parse(test::read(e.final_dir + "/config.json"));
  EXPECT_EQ(theirs["bos_token_id"], cfg["bos_token_id"]);
  EXPECT_EQ(theirs["eos_token_id"], cfg["eos_token_id"]);
  EXPECT_EQ(theirs["unk_token_id"], 0);
  ASSERT_EQ(theirs["ids"].size(), texts.size());
  ASSERT_EQ(theirs["sentencepiece"].size(), texts.size());
  for (std::size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(theirs["ids"][i], ours[i]) << "transformers vs sft on " << json(texts[i]).dump();
    EXPECT_EQ(theirs["sentencepiece"][i], ours[i]) << "sentencepiece vs sft on " << json(texts[i]).dump();
  }
  for (std::size_t k = 0; k < rendered.size(); ++k)
    EXPECT_EQ(theirs["ids"][first_prompt + k], rendered[k])
        << "transformers vs sft data render on " << json(texts[first_prompt + k]).dump();
  // Byte fallback was exercised: ids 3..258 are the <0xNN> byte pieces.
  bool bytes = false;
  for (const auto& id : ours[5]) bytes |= id.get<int>() >= 3 && id.get<int>() <= 258;
  EXPECT_TRUE(bytes) << ours[5].dump();
}

// Saves a tiny LlamaForCausalLM with transformers and checks that sft scores it the same.
void expect_transformers_save_scores_the_same(const std::vector<std::string>& save_args,
                                              const std::string& dtype, const std::string& st_dtype) {
  test::TempDir d;
  const std::string dir = d.file("m");
  std::vector<std::string> args = {"save", dir, "--dtype", dtype, "--kv-heads", "2", "--ids", sequence()};
  args.insert(args.end(), save_args.begin(), save_args.end());
  auto theirs = hf(args);
  ASSERT_TRUE(theirs.is_object());
  expect_clean_load(theirs);
  // The folder is what the claim is about: several shards with an index, GQA, the dtype.
  json cfg = theirs["saved_config"];
  EXPECT_EQ(cfg["num_attention_heads"], 4);
  EXPECT_EQ(cfg["num_key_value_heads"], 2);
  EXPECT_EQ(cfg.value("dtype", ""), dtype);
  ASSERT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));
  int shards = 0;
  for (const auto& f : fs::list_dir(dir)) {
    if (f.size() < 12 || f.substr(f.size() - 12) != ".safetensors") continue;
    ++shards;
    auto st = model::SafetensorsFile::open(dir + "/" + f);
    for (const auto& t : st->header().tensors) EXPECT_EQ(t.dtype, st_dtype) << f << " " << t.name;
  }
  EXPECT_GE(shards, 3);

  auto ours = sft_score({"--model", dir, "--ids", sequence()});
  ASSERT_TRUE(ours.is_object());
  EXPECT_GT(spread(theirs), 1.0);
  EXPECT_LT(max_diff(ours, theirs), kTolerance)
      << "sft " << ours["logprobs"].dump() << "\ntransformers " << theirs["logprobs"].dump();
}

TEST(Transformers, ShardedFp32GqaSaveScoresTheSameInSft) {
  SFT_REQUIRE_PYTHON();
  expect_transformers_save_scores_the_same({}, "float32", "F32");
}

// sft widens the bf16 weights to fp32 and computes in fp32; transformers loaded with
// dtype=float32 does the same, so the fp32 tolerance holds.
TEST(Transformers, ShardedBf16GqaTiedSaveScoresTheSameInSft) {
  SFT_REQUIRE_PYTHON();
  expect_transformers_save_scores_the_same({"--tied"}, "bfloat16", "BF16");
}

// transformers 5.24 writes the rope settings only inside config.json's "rope_parameters"
// (no top-level rope_theta or rope_scaling): sft must honour them, not its defaults.
TEST(Transformers, RopeParametersThatTransformersWritesAreHonouredBySft) {
  SFT_REQUIRE_PYTHON();
  for (const auto& extra : std::vector<std::vector<std::string>>{
           {"--rope-theta", "500000"}, {"--rope-theta", "500000", "--llama3-scaling"}}) {
    SCOPED_TRACE(extra.back());
    test::TempDir d;
    std::vector<std::string> args = {"save", d.file("m"), "--dtype", "float32", "--ids", sequence()};
    args.insert(args.end(), extra.begin(), extra.end());
    auto theirs = hf(args);
    ASSERT_TRUE(theirs.is_object());
    expect_clean_load(theirs);
    // The rope settings matter at these positions: the default rope scores differently.
    json plain = {{"logprobs", theirs["logprobs_with_default_rope"]}};
    ASSERT_EQ(plain["logprobs"].size(), theirs["logprobs"].size());
    EXPECT_GT(max_diff(theirs, plain), 1e-2);
    auto ours = sft_score({"--model", d.file("m"), "--ids", sequence()});
    ASSERT_TRUE(ours.is_object());
    EXPECT_LT(max_diff(ours, theirs), kTolerance)
        << "sft " << ours["logprobs"].dump() << "\ntransformers " << theirs["logprobs"].dump();
  }
}

}  // namespace
}  // namespace sft
