// The real public datasets (../shared/data) through `sft data stats` with the real Llama-2
// tokenizer: true record counts, zero bad records. Skipped when the folder is absent.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace sft {
namespace {

TEST(RealData, StatsReportTrueRecordCountsAndNoBadRecords) {
  SFT_REQUIRE_SHARED_DATA();
  test::TempDir d;
  const std::string s = test::shared_data();
  auto r = test::run_sft({"data",
                          "stats",
                          "--json",
                          "--config",
                          "tests/fixtures/configs/real_data.yaml",
                          "--set",
                          "data.cache_dir=" + d.path(),
                          "--set",
                          "tokenizer=" + s + "/tokenizers/llama2/tokenizer.model",
                          "--set",
                          "datasets.gsm8k_train.path=" + s + "/gsm8k/train.jsonl",
                          "--set",
                          "datasets.gsm8k_test.path=" + s + "/gsm8k/test.jsonl",
                          "--set",
                          "datasets.code_alpaca.path=" + s + "/codealpaca/code_alpaca_2k.json",
                          "--set",
                          "datasets.alpaca_demo.path=" + s + "/alpaca/alpaca_en_demo.json",
                          "--set",
                          "datasets.alpaca_tiny.path=" + s + "/alpaca/alpaca_tiny.json",
                          "--set",
                          "datasets.sharegpt.path=" + s + "/sharegpt/fastchat/dummy_conversation.json",
                          "--set",
                          "datasets.kto_positive.path=" + s + "/messages/kto_en_demo.json",
                          "--set",
                          "datasets.mt_bench.path=" + s + "/sharegpt/fastchat/mt_bench/question.jsonl"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  const std::pair<const char*, long> expected[] = {
      {"gsm8k_train", 7473}, {"gsm8k_test", 1319}, {"code_alpaca", 2017}, {"alpaca_demo", 999},
      {"alpaca_tiny", 100},  {"sharegpt", 500},    {"kto_positive", 300}, {"mt_bench", 80}};
  for (const auto& [name, n] : expected) {
    const auto& ds = j["datasets"][name];
    EXPECT_EQ(ds["read"].get<long>(), n) << name;
    EXPECT_EQ(ds["bad"].get<long>(), 0) << name;
  }
  // The KTO set keeps label == true only: 150 of 300.
  EXPECT_EQ(j["datasets"]["kto_positive"]["filtered"], 150);
  EXPECT_EQ(j["datasets"]["kto_positive"]["kept"], 150);
  // Every GSM8K record has a trained answer; MT-Bench questions without a reference have none.
  EXPECT_EQ(j["datasets"]["gsm8k_train"]["kept"], 7473);
  EXPECT_EQ(j["datasets"]["gsm8k_train"]["zero_target"], 0);
  EXPECT_EQ(
      j["datasets"]["mt_bench"]["kept"].get<long>() + j["datasets"]["mt_bench"]["zero_target"].get<long>(),
      80);
  // Packing the real length distribution into 2048-token rows wastes almost nothing.
  EXPECT_GT(j["stages"][0]["packing_efficiency"].get<double>(), 0.97);
}

TEST(RealData, RenderMatchesFastChatForTheFirstShareGptConversation) {
  SFT_REQUIRE_SHARED_DATA();
  auto r = test::run_sft({"data", "render", "--format", "sharegpt", "--template", "vicuna_v1.1", "--index",
                          "0", test::shared_data() + "/sharegpt/fastchat/dummy_conversation.json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(
      r.out,
      "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
      "detailed, and polite answers to the user's questions. USER: Who are you? ASSISTANT: I am Vicuna, a "
      "language model trained by researchers from Large Model Systems Organization (LMSYS).</s>USER: Have a "
      "nice day! ASSISTANT: You too!</s>\n");
  const std::string tok = test::shared_data() + "/tokenizers/llama2/tokenizer.model";
  const std::string file = test::shared_data() + "/sharegpt/fastchat/dummy_conversation.json";
  auto g = test::run_sft({"data", "render", "--format", "sharegpt", "--generation", "--index", "0", "--json",
                          "--tokenizer", tok, file});
  auto t = test::run_sft(
      {"data", "render", "--format", "sharegpt", "--index", "0", "--json", "--tokenizer", tok, file});
  ASSERT_EQ(g.exit_code, 0) << g.err;
  ASSERT_EQ(t.exit_code, 0) << t.err;
  auto gen = nlohmann::json::parse(g.out), train = nlohmann::json::parse(t.out);
  const std::string text = gen["text"];
  const std::string tail = " USER: Who are you? ASSISTANT:";
  ASSERT_GE(text.size(), tail.size());
  EXPECT_EQ(text.substr(text.size() - tail.size()), tail);
  // The generation prompt's ids are the training sample's ids up to the first answer.
  auto gids = gen["ids"].get<std::vector<int>>(), tids = train["ids"].get<std::vector<int>>();
  auto tmask = train["mask"].get<std::vector<int>>();
  ASSERT_LT(gids.size(), tids.size());
  EXPECT_TRUE(std::equal(gids.begin(), gids.end(), tids.begin()));
  EXPECT_EQ(gids[0], 1);
  EXPECT_EQ(tmask[gids.size() - 1], 0);
  EXPECT_EQ(tmask[gids.size()], 1);
}

}  // namespace
}  // namespace sft
