// The tiny Qwen3 end to end (issue 28): configs/tiny/dmt_qwen.yaml — a Qwen3-architecture model,
// the Qwen-style tokenizer.json trained on the tiny data (data/tiny/qwen), the qwen3 template —
// trained by `sft train` through both DMT stages, exported, then loaded by transformers as a
// user would (AutoTokenizer, AutoModelForCausalLM, the folder's chat template and
// generation_config.json), answering through the qwen3 template exactly as `sft generate` does:
// the same greedy tokens, stopping at the same EOS. `sft eval` runs on the folder too.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "hf_client.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft {
namespace {

using nlohmann::json;
using namespace test::hf_client;

TEST(TinyQwen, DmtTrainsExportsAndChatsInTransformersAsInSft) {
  SFT_REQUIRE_PYTHON();
  test::TempDir d;
  const std::string run = d.file("run");
  auto r = test::run_sft({"train", "--config", "configs/tiny/dmt_qwen.yaml", "--output-dir", run, "--set",
                          "data.cache_dir=" + d.file("cache"), "--set", "datasets.math.fraction=1/16",
                          "--set", "datasets.code.fraction=1/16", "--set", "datasets.general.fraction=1/4",
                          "--set", "train.export_stage_models=false"},
                         {}, 900);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string model = run + "/final";

  // What the exported folder says about itself.
  auto config = json::parse(test::read(model + "/config.json"));
  EXPECT_EQ(config["model_type"], "qwen3");
  EXPECT_EQ(config["architectures"][0], "Qwen3ForCausalLM");
  auto tc = json::parse(test::read(model + "/tokenizer_config.json"));
  ASSERT_TRUE(tc.contains("chat_template")) << tc.dump();
  EXPECT_EQ(tc["eos_token"], "<|im_end|>");
  auto gc = json::parse(test::read(model + "/generation_config.json"));
  EXPECT_EQ(gc["eos_token_id"], json::array({2, 0})) << gc.dump();  // <|im_end|>, <|endoftext|>
  EXPECT_TRUE(fs::exists(model + "/tokenizer.json"));

  // transformers chats with it through the folder's template; sft generates through qwen3.
  const std::vector<std::string> questions = {
      "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
      "How many clips did Natalia sell altogether in April and May?",
      "Hello! Who are you?"};
  std::vector<std::string> hf_args = {"chat", model, "--max-new-tokens", "48"};
  std::vector<std::string> sft_args = {
      test::sft_binary(), "generate", "--model",  model, "--template", "qwen3",
      "--max-new-tokens", "48",       "--device", "cpu", "--json"};
  for (const auto& q : questions) {
    hf_args.insert(hf_args.end(), {"--question", q});
    sft_args.insert(sft_args.end(), {"--prompt", q});
  }
  json theirs = hf(hf_args);
  ASSERT_FALSE(theirs.is_null());
  EXPECT_EQ(theirs["class"], "Qwen3ForCausalLM");
  auto g = test::run_program(sft_args, {{"OMP_NUM_THREADS", "1"}}, 300);
  ASSERT_EQ(g.exit_code, 0) << g.err;
  std::vector<json> ours;
  std::istringstream lines(g.out);
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) ours.push_back(json::parse(line));
  ASSERT_EQ(ours.size(), questions.size()) << g.out;
  int stopped = 0;
  for (std::size_t i = 0; i < questions.size(); ++i) {
    const auto& a = theirs["answers"][i];
    EXPECT_EQ(ours[i]["text"].get<std::string>(), a["text"].get<std::string>()) << "question " << i;
    EXPECT_EQ(a["prompt"].get<std::string>().find("<|im_start|>assistant\n<think>\n\n</think>\n\n") !=
                  std::string::npos,
              true)
        << a["prompt"];
    // transformers stopped at an EOS id of generation_config.json before the limit, or ran to it.
    if (a["tokens"].size() < 48u) {
      ++stopped;
      const auto last = a["tokens"].back().get<int>();
      EXPECT_TRUE(last == 2 || last == 0) << "ended on id " << last;
    }
    EXPECT_EQ(ours[i]["text"].get<std::string>().find("<|im_end|>"), std::string::npos);
  }
  EXPECT_GT(stopped, 0) << "no answer ended at an EOS: the EOS ids were never exercised";

  // sft eval on the exported folder (the general skill: chat answers that must end at EOS).
  auto e =
      test::run_sft({"eval", "--model", model, "--benchmark", "general", "--limit", "8", "--json"}, {}, 600);
  ASSERT_EQ(e.exit_code, 0) << e.err;
  EXPECT_EQ(json::parse(e.out)["summary"]["metric"], "exact_match");
}

}  // namespace
}  // namespace sft
