// `sft data render` against FastChat's fastchat.conversation (fschat in the venv), on the
// real ShareGPT file: training texts and generation prompts, byte for byte, for every sft
// template with a FastChat counterpart (tests/clients/fastchat_render.py does the
// comparing). Also: a conversation that ends with the user's turn renders the prompt for
// its answer, and has no training sample unless it holds an answer.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace sft {
namespace {

const char* kVicunaSys =
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, "
    "and polite answers to the user's questions.";

std::string script() { return test::source_dir() + "/tests/clients/fastchat_render.py"; }
std::string sharegpt() { return test::shared_data() + "/sharegpt/fastchat/dummy_conversation.json"; }

std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> v;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) v.push_back(nlohmann::json::parse(line));
  return v;
}

TEST(FastChat, SftRenderEqualsFastChatOnRealShareGpt) {
  SFT_REQUIRE_PYTHON();
  SFT_REQUIRE_SHARED_DATA();
  auto r = test::run_program({test::python(), script(), "--sft", test::sft_binary(), "--data", sharegpt()},
                             {}, 600);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["mismatches"], 0) << j["first_mismatch"].dump(1);
  // 500 conversations with 1000 user turns (167 of 1, 166 of 2, 167 of 3).
  EXPECT_EQ(j["conversations"], 500);
  EXPECT_EQ(j["user_turns"], 1000);
  const std::pair<const char*, const char*> pairs[] = {
      {"vicuna_v1.1", "vicuna_v1.1"}, {"llama-2", "llama-2"}, {"chatml", "qwen-7b-chat"}};
  const std::pair<const char*, int> checks[] = {{"train", 500},         {"system", 500},
                                                {"generation", 500},    {"user_turns", 1000},
                                                {"synthetic_train", 4}, {"synthetic_user_turns", 7}};
  ASSERT_EQ(j["templates"].size(), 3u) << j["templates"].dump(1);
  for (const auto& [sft_name, fastchat_name] : pairs) {
    const auto& t = j["templates"][sft_name];
    EXPECT_EQ(t["fastchat"], fastchat_name);
    for (const auto& [check, records] : checks) {
      EXPECT_EQ(t["checks"][check]["records"], records) << sft_name << " " << check;
      EXPECT_EQ(t["checks"][check]["mismatches"], 0) << sft_name << " " << check;
    }
  }
}

// sft's alpaca is Stanford Alpaca's PROMPT_DICT; FastChat's "alpaca" writes
// "### Instruction: text" on one line. The comparison finds the first byte where they part.
TEST(FastChat, SftAlpacaIsNotFastChatsAlpacaAndTheComparisonSaysWhere) {
  SFT_REQUIRE_PYTHON();
  SFT_REQUIRE_SHARED_DATA();
  auto r = test::run_program({test::python(), script(), "--sft", test::sft_binary(), "--data", sharegpt(),
                              "--pair", "alpaca=alpaca"},
                             {}, 600);
  ASSERT_EQ(r.exit_code, 1) << r.err << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["templates"]["alpaca"]["checks"]["train"]["mismatches"], 500);
  const auto& first = j["first_mismatch"];
  EXPECT_EQ(first["check"], "train");
  EXPECT_EQ(first["index"], 0);
  EXPECT_EQ(first["id"], "identity_0");
  const std::string preamble =
      "Below is an instruction that describes a task. Write a response that appropriately completes the "
      "request."
      "\n\n### Instruction:";
  EXPECT_EQ(first["position"], preamble.size());
  EXPECT_NE(r.err.find("character " + std::to_string(preamble.size())), std::string::npos) << r.err;
}

TEST(FastChat, ConversationEndingWithTheUsersTurnRendersThePromptForItsAnswer) {
  test::TempDir d;
  const std::string file = d.file("open.json");
  test::write(file, R"([
{"id": "alone", "conversations": [{"from": "human", "value": "Who are you?"}]},
{"id": "later", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
                                  {"from": "human", "value": "Bye"}]}
])");
  auto g = test::run_sft({"data", "render", "--format", "sharegpt", "--template", "vicuna_v1.1",
                          "--generation", "--json", file});
  ASSERT_EQ(g.exit_code, 0) << g.err;
  auto prompts = json_lines(g.out);
  ASSERT_EQ(prompts.size(), 2u) << g.out;
  // fastchat.conversation "vicuna_v1.1": the messages, then append_message(roles[1], None).
  EXPECT_EQ(prompts[0]["text"], std::string(kVicunaSys) + " USER: Who are you? ASSISTANT:");
  EXPECT_EQ(prompts[1]["text"],
            std::string(kVicunaSys) + " USER: Hi ASSISTANT: Hello!</s>USER: Bye ASSISTANT:");

  // Training: the answered part only; a conversation without an answer is refused, naming
  // the file, line, record and id.
  auto t =
      test::run_sft({"data", "render", "--format", "sharegpt", "--template", "vicuna_v1.1", "--json", file});
  EXPECT_EQ(t.exit_code, 2) << t.out;
  EXPECT_NE(t.err.find(file + ":2: record 0, id alone"), std::string::npos) << t.err;
  EXPECT_NE(t.err.find("no assistant answer"), std::string::npos) << t.err;
  auto s = test::run_sft(
      {"data", "render", "--format", "sharegpt", "--template", "vicuna_v1.1", "--json", "--skip-bad", file});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  auto samples = json_lines(s.out);
  ASSERT_EQ(samples.size(), 1u) << s.out;
  EXPECT_EQ(samples[0]["id"], "later");
  EXPECT_EQ(samples[0]["text"], std::string(kVicunaSys) + " USER: Hi ASSISTANT: Hello!</s>");
  EXPECT_NE(s.err.find("id alone"), std::string::npos) << s.err;
}

}  // namespace
}  // namespace sft
