// Chat templates: byte-exact renderings (FastChat conversation.py, Stanford Alpaca) and
// trained-token flags that cover exactly the assistant's tokens and the end-of-turn token.
#include "sft/data/chat_template.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "sft/util/error.h"
#include "test_util.h"

namespace sft::data {
namespace {

Record chat(std::vector<std::string> turns, std::string system = "", bool has_system = false) {
  Record r;
  r.has_system = has_system;
  r.system = system;
  for (std::size_t i = 0; i < turns.size(); ++i)
    r.turns.push_back({i % 2 ? Role::kAssistant : Role::kUser, turns[i]});
  return r;
}

const char* kVicunaSys =
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, "
    "and polite answers to the user's questions.";

TEST(ChatTemplate, VicunaMatchesFastChatAddColonTwo) {
  auto t = ChatTemplate::create("vicuna_v1.1");
  Record r = chat({"Hi there", "Hello! How can I help?", "What is 2+2?", "4"});
  // conv.get_prompt() for these messages (ADD_COLON_TWO, sep=" ", sep2="</s>").
  EXPECT_EQ(t.render(r),
            std::string(kVicunaSys) +
                " USER: Hi there ASSISTANT: Hello! How can I help?</s>USER: What is 2+2? ASSISTANT: 4</s>");
  EXPECT_EQ(ChatTemplate::join(t.generation_segments(r, 0)),
            std::string(kVicunaSys) + " USER: Hi there ASSISTANT:");
  EXPECT_EQ(ChatTemplate::join(t.generation_segments(r, 1)),
            std::string(kVicunaSys) +
                " USER: Hi there ASSISTANT: Hello! How can I help?</s>USER: What is 2+2? ASSISTANT:");
}

TEST(ChatTemplate, VicunaUsesTheRecordsSystemMessage) {
  auto t = ChatTemplate::create("vicuna_v1.1");
  EXPECT_EQ(t.render(chat({"q", "a"}, "Be brief.", true)), "Be brief. USER: q ASSISTANT: a</s>");
  auto t2 = ChatTemplate::create("vicuna_v1.1", std::string(""));
  EXPECT_EQ(t2.render(chat({"q", "a"})), " USER: q ASSISTANT: a</s>");  // FastChat: "" + sep
}

TEST(ChatTemplate, EmptyAnswerRendersLikeFastChat) {
  auto t = ChatTemplate::create("vicuna_v1.1", std::string("S"));
  // FastChat: an empty message renders "ROLE:" with no separator.
  EXPECT_EQ(t.render(chat({"q1", "", "q2", "a2"})), "S USER: q1 ASSISTANT:USER: q2 ASSISTANT: a2</s>");
}

TEST(ChatTemplate, EmptyUserTurnRendersLikeFastChat) {
  // FastChat renders any empty message as its bare role tag (get_prompt's `if message:`).
  Record r = chat({"", "a"});
  EXPECT_EQ(ChatTemplate::create("vicuna_v1.1", std::string("S")).render(r), "S USER:ASSISTANT: a</s>");
  EXPECT_EQ(ChatTemplate::create("llama-2", std::string("S")).render(r),
            "[INST] <<SYS>>\nS\n<</SYS>>\n\n[INST][/INST] a </s><s>");
  EXPECT_EQ(ChatTemplate::create("chatml", std::string("S")).render(r),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n<|im_start|>assistant\na<|im_end|>\n");
}

// fastchat.conversation for ["Hi", "Hello!", "Bye"] then append_message(roles[1], None).
TEST(ChatTemplate, ConversationEndingWithTheUsersTurnRendersTheWholeConversationsPrompt) {
  Record r = chat({"Hi", "Hello!", "Bye"});
  EXPECT_TRUE(ChatTemplate::awaits_answer(r));
  EXPECT_FALSE(ChatTemplate::awaits_answer(chat({"Hi", "Hello!"})));
  const std::pair<const char*, std::string> want[] = {
      {"vicuna_v1.1", std::string(kVicunaSys) + " USER: Hi ASSISTANT: Hello!</s>USER: Bye ASSISTANT:"},
      {"llama-2", "[INST] Hi [/INST] Hello! </s><s>[INST] Bye [/INST]"},
      {"chatml",
       "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
       "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"}};
  for (const auto& [name, prompt] : want) {
    auto t = ChatTemplate::create(name);
    EXPECT_EQ(ChatTemplate::join(t.generation_segments(r)), prompt) << name;
    EXPECT_EQ(ChatTemplate::join(t.generation_segments(r, 1)), prompt) << name;
    // The training sample is the answered part only.
    EXPECT_EQ(t.render(r), t.render(chat({"Hi", "Hello!"}))) << name;
  }
  // A single unanswered question: its prompt renders, and nothing is trained.
  auto v = ChatTemplate::create("vicuna_v1.1");
  Record q = chat({"q"});
  EXPECT_EQ(ChatTemplate::join(v.generation_segments(q)), std::string(kVicunaSys) + " USER: q ASSISTANT:");
  for (const auto& seg : v.generation_segments(q)) EXPECT_FALSE(seg.trained);
}

TEST(ChatTemplate, ConversationWithoutAnAnswerIsRefusedForTrainingNamingTheRecord) {
  auto t = ChatTemplate::create("vicuna_v1.1");
  Record q = chat({"q"});
  q.origin = {"convs.json", 7, 3, "abc"};
  try {
    t.segments(q);
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("convs.json:7"), std::string::npos) << m;
    EXPECT_NE(m.find("record 3, id abc"), std::string::npos) << m;
    EXPECT_NE(m.find("no assistant answer"), std::string::npos) << m;
  }
}

TEST(ChatTemplate, GenerationPromptsExistOnlyForTheConversationsUserTurns) {
  auto t = ChatTemplate::create("vicuna_v1.1");
  Record r = chat({"q1", "a1", "q2", "a2"});
  EXPECT_NO_THROW(t.generation_segments(r, 1));
  EXPECT_THROW(t.generation_segments(r, 2), Error);  // there is no third user turn
  EXPECT_THROW(t.generation_segments(r), Error);     // every user turn is answered
  EXPECT_THROW(t.generation_segments(chat({"q1", "a1", "q2"}), 2), Error);
}

TEST(ChatTemplate, Llama2MatchesFastChatLlama2Style) {
  auto t = ChatTemplate::create("llama-2");
  Record r = chat({"Hi", "Hello!", "Bye", "Goodbye."});
  EXPECT_EQ(t.render(r), "[INST] Hi [/INST] Hello! </s><s>[INST] Bye [/INST] Goodbye. </s><s>");
  EXPECT_EQ(ChatTemplate::join(t.generation_segments(r, 1)),
            "[INST] Hi [/INST] Hello! </s><s>[INST] Bye [/INST]");
  auto ts = ChatTemplate::create("llama-2", std::string("You are kind."));
  EXPECT_EQ(ts.render(chat({"Hi", "Hello!"})),
            "[INST] <<SYS>>\nYou are kind.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>");
}

TEST(ChatTemplate, ChatmlMatchesFastChatChatmlStyle) {
  auto t = ChatTemplate::create("chatml");
  EXPECT_EQ(t.render(chat({"Hi", "Hello!"})),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n");
  EXPECT_EQ(ChatTemplate::join(t.generation_segments(chat({"Hi", "Hello!"}), 0)),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(ChatTemplate, AlpacaMatchesStanfordPromptDict) {
  auto t = ChatTemplate::create("alpaca");
  Record r = chat({"Add the numbers.", "5"});
  r.input = "2 and 3";
  EXPECT_EQ(
      t.render(r),
      "Below is an instruction that describes a task, paired with an input that provides further context. "
      "Write a response that appropriately completes the request.\n\n### Instruction:\nAdd the numbers.\n\n"
      "### Input:\n2 and 3\n\n### Response:\n5</s>");
  EXPECT_EQ(
      t.render(chat({"Say hi.", "hi"})),
      "Below is an instruction that describes a task. Write a response that appropriately completes the "
      "request.\n\n### Instruction:\nSay hi.\n\n### Response:\nhi</s>");
}

TEST(ChatTemplate, RawJoinsTurnsWithNewlines) {
  auto t = ChatTemplate::create("raw");
  EXPECT_EQ(t.render(chat({"q", "a"})), "q\na</s>");
}

TEST(ChatTemplate, UnknownTemplateIsAConfigError) {
  EXPECT_THROW(ChatTemplate::create("vicuna"), ConfigError);
}

class TemplateMask : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override { tok_ = Tokenizer::load(test::tiny("tokenizer.model")); }
  std::shared_ptr<const Tokenizer> tok_;
};

TEST_P(TemplateMask, TrainedTokensAreExactlyTheAnswersAndEndOfTurn) {
  auto t = ChatTemplate::create(GetParam());
  Record r = chat({"What is 12+7?", "12+7 = 19.\n#### 19", "Thanks!", "You're welcome!"});
  Encoded e = ChatTemplate::encode(t.segments(r), *tok_);
  ASSERT_EQ(e.ids.size(), e.trained.size());
  // Trained spans, decoded one by one, are each answer followed by its end-of-turn token.
  std::vector<std::vector<std::int32_t>> spans;
  for (std::size_t i = 0; i < e.ids.size(); ++i) {
    if (!e.trained[i]) continue;
    if (i == 0 || !e.trained[i - 1]) spans.emplace_back();
    spans.back().push_back(e.ids[i]);
  }
  ASSERT_EQ(spans.size(), 2u);
  const std::string name = GetParam();
  for (std::size_t k = 0; k < 2; ++k) {
    const std::string& answer = r.turns[2 * k + 1].content;
    std::string text = tok_->decode(spans[k]);
    if (name == "chatml") {
      EXPECT_EQ(text, answer + "<|im_end|>");
    } else {
      EXPECT_EQ(spans[k].back(), tok_->eos_id());
      spans[k].pop_back();
      std::string body = tok_->decode(spans[k]);
      // Decoding drops the leading separator space; llama-2 keeps one trailing space.
      std::string want = name == "llama-2" ? answer + " " : answer;
      EXPECT_EQ(body, want) << name;
    }
  }
  // The first token (BOS) is never a target and the prompt of turn 1 is masked.
  EXPECT_EQ(e.ids[0], tok_->bos_id());
  EXPECT_EQ(e.trained[0], 0);
}

TEST_P(TemplateMask, GenerationPromptIsAPrefixOfTheTrainingSample) {
  auto t = ChatTemplate::create(GetParam());
  Record r = chat({"Hi, my name is Ava.", "Hello Ava! How can I help you today?", "Who are you?",
                   "I am a helpful assistant trained to answer your questions."});
  Encoded full = ChatTemplate::encode(t.segments(r), *tok_);
  for (std::size_t turn = 0; turn < 2; ++turn) {
    Encoded prompt = ChatTemplate::encode(t.generation_segments(r, turn), *tok_);
    ASSERT_LT(prompt.ids.size(), full.ids.size());
    EXPECT_TRUE(std::equal(prompt.ids.begin(), prompt.ids.end(), full.ids.begin()))
        << GetParam() << " turn " << turn;
    // Same trained flags over the shared prefix, whose last token is a prompt token; the next
    // token starts the answer to `turn`.
    EXPECT_TRUE(std::equal(prompt.trained.begin(), prompt.trained.end(), full.trained.begin()));
    EXPECT_EQ(prompt.trained.back(), 0);
    EXPECT_EQ(full.trained[prompt.ids.size()], 1) << GetParam() << " turn " << turn;
  }
}

TEST_P(TemplateMask, PromptForAnUnansweredLastTurnIsAPrefixOfTheAnsweredSample) {
  auto t = ChatTemplate::create(GetParam());
  Record open = chat({"Hi, my name is Ava.", "Hello Ava!", "Who are you?"});
  Record answered = chat({"Hi, my name is Ava.", "Hello Ava!", "Who are you?", "An assistant."});
  Encoded prompt = ChatTemplate::encode(t.generation_segments(open), *tok_);
  Encoded full = ChatTemplate::encode(t.segments(answered), *tok_);
  ASSERT_LT(prompt.ids.size(), full.ids.size());
  EXPECT_TRUE(std::equal(prompt.ids.begin(), prompt.ids.end(), full.ids.begin())) << GetParam();
  EXPECT_TRUE(std::equal(prompt.trained.begin(), prompt.trained.end(), full.trained.begin())) << GetParam();
  EXPECT_EQ(full.trained[prompt.ids.size()], 1) << GetParam();  // the next token starts the last answer
}

INSTANTIATE_TEST_SUITE_P(AllTemplates, TemplateMask,
                         ::testing::Values("vicuna_v1.1", "llama-2", "chatml", "alpaca", "raw"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& c : n)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST(ChatTemplate, RawTextRecordsAreTrainedOnEveryToken) {
  auto tok = Tokenizer::load(test::tiny("tokenizer.model"));
  Record r;
  r.is_text = true;
  r.text = "Sam has 3 apples.";
  Encoded e = ChatTemplate::encode(ChatTemplate::create("vicuna_v1.1").segments(r), *tok);
  EXPECT_EQ(e.trained[0], 0);  // BOS
  for (std::size_t i = 1; i < e.trained.size(); ++i) EXPECT_EQ(e.trained[i], 1);
  EXPECT_EQ(e.ids.back(), tok->eos_id());
}

}  // namespace
}  // namespace sft::data
