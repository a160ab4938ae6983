// HfTokenizer against the Hugging Face `tokenizers` library (tests/clients/hf_tokenize.py),
// id for id: the real LLaMA-3.2 tokenizer.json on every message of the real ShareGPT, GSM8K
// and Code Alpaca files and on a hostile corpus; a Qwen2-style tokenizer trained here by
// tokenizers (merges saved as pairs, and rewritten in the legacy "a b" form); the regex
// classes and NFC on every code point; and small files for each option HfTokenizer supports.
// Each comparison also checks decode (with and without special tokens) against tokenizers'.
#include "sft/data/hf_tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <utf8proc.h>

#include "data/hf_tokenizer_fixtures.h"
#include "sft/util/error.h"
#include "test_util.h"

namespace sft::data {
namespace {

using nlohmann::json;
using test::hf::Reference;

// The real LLaMA-3.2 tokenizer.json (hf_tokenizer_fixtures.h).
#define REQUIRE_LLAMA3(path)          \
  SFT_REQUIRE_LLAMA3_DIR(path##_dir); \
  const std::string path = path##_dir + "/tokenizer.json"

// A text for a failure message: the whole of a short one, the start of a long one.
std::string show_text(const std::string& text) {
  if (text.size() <= 160) return json(text).dump();
  std::size_t cut = 160;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return json(text.substr(0, cut)).dump() + "... (" + std::to_string(text.size()) + " bytes)";
}

std::string show_ids(const std::vector<std::int32_t>& ids, std::size_t from) {
  std::string s;
  for (std::size_t i = from; i < ids.size() && i < from + 8; ++i) s += std::to_string(ids[i]) + " ";
  return s;
}

// Compares HfTokenizer with tokenizers' results on every text; returns the texts compared.
std::size_t expect_equal(const HfTokenizer& t, const std::vector<std::string>& texts,
                         const std::vector<Reference>& refs, const std::string& label) {
  EXPECT_EQ(refs.size(), texts.size()) << label;
  int mismatches = 0;
  auto report = [&](std::size_t i, const std::string& what) {
    if (++mismatches <= 5)
      ADD_FAILURE() << label << " text " << i << " " << show_text(texts[i]) << ": " << what;
  };
  for (std::size_t i = 0; i < refs.size() && i < texts.size(); ++i) {
    const Reference& ref = refs[i];
    if (!ref.error.empty()) {
      report(i, "tokenizers failed: " + ref.error);
      continue;
    }
    auto ids = t.encode(texts[i]);
    if (ids != ref.ids) {
      std::size_t k = 0;
      while (k < ids.size() && k < ref.ids.size() && ids[k] == ref.ids[k]) ++k;
      report(i, "ids differ at " + std::to_string(k) + ": sft " + show_ids(ids, k) + "| tokenizers " +
                    show_ids(ref.ids, k));
      continue;
    }
    if (t.encode_with_special(texts[i]) != ref.ids_special) report(i, "encode_with_special differs");
    std::string decoded = t.decode(ids);
    if (decoded != ref.decoded)
      report(i, "decode differs: " + show_text(decoded) + " vs " + show_text(ref.decoded));
    if (ref.decoded == texts[i] && decoded != texts[i])
      report(i, "does not round-trip where tokenizers does");
    if (t.decode(ref.ids_special, /*skip_special=*/true) != ref.decoded_skip)
      report(i, "decode(skip_special) differs");
  }
  EXPECT_EQ(mismatches, 0) << label << ": " << mismatches << " of " << texts.size() << " texts differ";
  std::cout << "[ compared ] " << label << ": " << texts.size() << " texts, " << mismatches << " differ\n";
  return texts.size();
}

std::vector<std::string> added_contents(const std::string& tokenizer_json) {
  std::vector<std::string> out;
  const json j = json::parse(test::read(tokenizer_json));
  for (const auto& a : j["added_tokens"]) out.push_back(a["content"]);
  return out;
}

// Every message of the real ShareGPT, GSM8K (train) and Code Alpaca files.
std::vector<std::pair<std::string, std::vector<std::string>>> real_texts() {
  const std::string d = test::shared_data();
  std::vector<std::string> sharegpt, gsm8k, code;
  const json conversations = json::parse(test::read(d + "/sharegpt/fastchat/dummy_conversation.json"));
  for (const auto& conv : conversations)
    for (const auto& m : conv["conversations"]) sharegpt.push_back(m["value"]);
  std::ifstream in(d + "/gsm8k/train.jsonl");
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) {
      auto j = json::parse(line);
      gsm8k.push_back(j["question"]);
      gsm8k.push_back(j["answer"]);
    }
  const json records = json::parse(test::read(d + "/codealpaca/code_alpaca_2k.json"));
  for (const auto& r : records)
    for (const char* k : {"instruction", "input", "output"}) code.push_back(r[k]);
  return {{"sharegpt", sharegpt}, {"gsm8k", gsm8k}, {"codealpaca", code}};
}

TEST(HfTokenizer, Llama3EqualsTokenizersOnEveryRealMessage) {
  REQUIRE_LLAMA3(path);
  SFT_REQUIRE_SHARED_DATA();
  auto t = HfTokenizer::load(path);
  auto sets = real_texts();
  std::vector<std::pair<std::string, std::vector<std::string>>> jobs;
  for (const auto& [name, texts] : sets) jobs.push_back({path, texts});
  auto refs = test::hf::tokenizers_reference(jobs);
  ASSERT_EQ(refs.size(), sets.size());
  std::size_t total = 0;
  for (std::size_t j = 0; j < sets.size(); ++j)
    total += expect_equal(*t, sets[j].second, refs[j], "llama3 " + sets[j].first);
  EXPECT_GT(total, 20000u);  // 2000 ShareGPT messages, 14946 GSM8K fields, 6000 Code Alpaca fields
}

// Also with ignore_merges set, as Meta's own LLaMA 3 tokenizer.json has it (the LLaMA-3.2
// file shipped in the package has it false).
TEST(HfTokenizer, Llama3EqualsTokenizersOnHostileCorpus) {
  REQUIRE_LLAMA3(path);
  test::TempDir d;
  const std::string ignoring = d.file("llama3_ignore_merges.json");
  json j = json::parse(test::read(path));
  ASSERT_FALSE(j["model"]["ignore_merges"].get<bool>());
  j["model"]["ignore_merges"] = true;
  test::write(ignoring, j.dump());
  auto t = HfTokenizer::load(path), u = HfTokenizer::load(ignoring);
  // Plus the text of every fourth vocab token: ignore_merges emits some of them whole where
  // the merges would split them.
  auto texts = test::hf::hostile_corpus(added_contents(path));
  for (std::int32_t id = 0; id < 128000; id += 4)
    if (std::string s = t->decode({id}); s.find("\uFFFD") == std::string::npos) texts.push_back(s);
  auto refs = test::hf::tokenizers_reference({{path, texts}, {ignoring, texts}});
  ASSERT_EQ(refs.size(), 2u);
  expect_equal(*t, texts, refs[0], "llama3 hostile + vocab");
  expect_equal(*u, texts, refs[1], "llama3 ignore_merges hostile + vocab");
  int whole = 0;
  for (const auto& text : texts) whole += t->encode(text) != u->encode(text);
  EXPECT_GT(whole, 50) << "ignore_merges should change the ids of some vocab tokens' texts";
  EXPECT_EQ(t->bos_id(), 128000);
  EXPECT_EQ(t->encode_with_special("Hello world"), (std::vector<std::int32_t>{128000, 9906, 1917}));
}

// A Qwen2-style tokenizer trained by tokenizers on the shipped tiny data: Qwen2's Split
// regex, ByteLevel without the GPT-2 regex, NFC, ChatML special tokens and non-special added
// tokens (normalized, lstrip/rstrip); saved with merges as pairs, and rewritten with legacy
// "a b" merges. Both files give tokenizers' ids, and the same ids.
TEST(HfTokenizer, QwenStyleTokenizerEqualsTokenizersWithPairAndLegacyMerges) {
  SFT_REQUIRE_PYTHON();
  test::TempDir d;
  const std::string pairs = d.file("qwen_pairs.json"), legacy = d.file("qwen_legacy.json");
  auto r = test::run_program(
      {test::python(), test::source_dir() + "/tests/clients/hf_tokenize.py", "train-qwen", pairs,
       test::tiny("general_train.json"), test::tiny("code_train.json"), test::tiny("math_train.jsonl")},
      {{"TOKENIZERS_PARALLELISM", "false"}}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(test::read(pairs));
  ASSERT_TRUE(j["model"]["merges"][0].is_array()) << "tokenizers saved merges in another format";
  for (auto& m : j["model"]["merges"]) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  test::write(legacy, j.dump());

  std::vector<std::string> texts = test::hf::hostile_corpus(added_contents(pairs));
  for (const auto& f : {"general_test.json", "code_test.jsonl", "math_test.jsonl"}) {
    std::string text = test::read(test::tiny(f));
    texts.push_back(text.substr(0, 20000));
  }
  if (!test::shared_data().empty())
    for (auto& [name, more] : real_texts())
      texts.insert(texts.end(), more.begin(), more.begin() + std::min<std::size_t>(more.size(), 2000));
  auto refs = test::hf::tokenizers_reference({{pairs, texts}, {legacy, texts}});
  ASSERT_EQ(refs.size(), 2u);
  auto a = HfTokenizer::load(pairs), b = HfTokenizer::load(legacy);
  expect_equal(*a, texts, refs[0], "qwen pairs");
  expect_equal(*b, texts, refs[1], "qwen legacy");
  EXPECT_EQ(a->bos_id(), std::nullopt);
  EXPECT_EQ(a->encode_with_special("hi"), a->encode("hi"));
  EXPECT_TRUE(a->is_special(*a->token_id("<|im_start|>")));
  EXPECT_FALSE(a->is_special(*a->token_id("<tool_call>")));
}

// The translated \s, \p{L}, \p{N} (and their complements, in and out of classes) remove
// exactly the code points tokenizers' Oniguruma removes, on every code point of planes 0-3
// and 14 and samples of the private-use planes; NFC (utf8proc) equals tokenizers' NFC on every
// code point and on each canonical decomposition.
TEST(HfTokenizer, RegexClassesAndNfcMatchTokenizersOnEveryCodePoint) {
  SFT_REQUIRE_PYTHON();
  test::TempDir d;
  std::vector<std::string> texts;
  std::string text;
  auto flush = [&] {
    if (!text.empty()) texts.push_back(text);
    text.clear();
  };
  auto add_range = [&](char32_t lo, char32_t hi) {
    for (char32_t c = lo; c <= hi; ++c) {
      if (c >= 0xD800 && c <= 0xDFFF) continue;
      hf::append_utf8(text, c);
      if (text.size() > 16000) flush();
    }
    flush();
  };
  add_range(0, 0x3FFFF);
  add_range(0xE0000, 0xE0FFF);
  add_range(0xFFF00, 0x10FFFF);
  std::vector<std::pair<std::string, std::vector<std::string>>> jobs;
  std::vector<std::string> labels;
  for (const char* pattern :
       {R"(\s)", R"(\p{L})", R"(\p{N})", R"(\P{L})", R"([^\s\p{N}])", R"([\S\p{N}]+)"}) {
    json t = test::hf::tiny_tokenizer();
    t["model"]["merges"] = json::array();
    t["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = pattern;
    t["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";
    std::string path = d.file("split" + std::to_string(jobs.size()) + ".json");
    test::write(path, t.dump());
    jobs.push_back({path, texts});
    labels.push_back(std::string("Removed ") + pattern);
  }
  // NFC: every code point after a space, and each code point's canonical decomposition.
  std::vector<std::string> nfc_texts = texts;
  std::string decomposed;
  for (char32_t c = 0; c <= 0x3FFFF; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    std::string s;
    hf::append_utf8(s, c);
    utf8proc_uint8_t* nfd = nullptr;
    auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), s.size(), &nfd,
                          static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE));
    if (n > 0 && std::string(reinterpret_cast<char*>(nfd), n) != s)
      decomposed += " " + std::string(reinterpret_cast<char*>(nfd), n);
    std::free(nfd);
    if (decomposed.size() > 16000) nfc_texts.push_back(std::move(decomposed)), decomposed.clear();
  }
  nfc_texts.push_back(decomposed);
  json nfc = test::hf::tiny_tokenizer();
  nfc["model"]["merges"] = json::array();
  nfc["normalizer"] = {{"type", "NFC"}};
  nfc["pre_tokenizer"] = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
  test::write(d.file("nfc.json"), nfc.dump());
  jobs.push_back({d.file("nfc.json"), nfc_texts});
  labels.push_back("NFC");

  auto refs = test::hf::tokenizers_reference(jobs);
  ASSERT_EQ(refs.size(), jobs.size());
  for (std::size_t j = 0; j < jobs.size(); ++j)
    expect_equal(*HfTokenizer::load(jobs[j].first), jobs[j].second, refs[j], labels[j]);
}

// Small files for each supported option, each against tokenizers on the hostile corpus.
TEST(HfTokenizer, EverySupportedOptionEqualsTokenizers) {
  SFT_REQUIRE_PYTHON();
  test::TempDir d;
  const std::string sp = test::hf::byte_char(' ');
  std::vector<std::pair<std::string, json>> cases;
  auto with_split = [](const std::string& pattern, const std::string& behavior, bool invert,
                       bool literal = false) {
    json t = test::hf::tiny_tokenizer();
    auto& split = t["pre_tokenizer"]["pretokenizers"][0];
    split["pattern"] = {{literal ? "String" : "Regex", pattern}};
    split["behavior"] = behavior;
    split["invert"] = invert;
    return t;
  };
  for (const char* behavior : {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"})
    for (bool invert : {false, true})
      cases.push_back({std::string("split ") + behavior + (invert ? " inverted" : ""),
                       with_split(R"([aeiou]+|\s)", behavior, invert)});
  cases.push_back({"split String literal", with_split("the", "MergedWithNext", false, /*literal=*/true)});
  cases.push_back({"split empty matches", with_split("x*", "Isolated", false)});
  cases.push_back({"split case-insensitive lookahead",
                   with_split(R"((?i:th(?=e))|\p{N}{2,}?|[^\S\n]+)", "Isolated", false)});
  {
    json t = test::hf::tiny_tokenizer();  // GPT-2 style: ByteLevel alone, prefix space, its own regex
    t["pre_tokenizer"] = {
        {"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
    cases.push_back({"ByteLevel prefix space + GPT-2 regex", t});
    t["pre_tokenizer"].erase("use_regex");  // tokenizers' default: true
    cases.push_back({"ByteLevel use_regex absent", t});
    json s = test::hf::tiny_tokenizer();
    s["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true;
    cases.push_back({"Split then ByteLevel with prefix space", s});
  }
  {
    json t = test::hf::tiny_tokenizer();  // "xyz" is in the vocab but no merge makes it
    t["model"]["vocab"]["xyz"] = t["model"]["vocab"].size();
    t["model"]["ignore_merges"] = true;
    cases.push_back({"ignore_merges", t});
    t["model"].erase("ignore_merges");
    cases.push_back({"ignore_merges absent", t});
  }
  {
    json t = test::hf::tiny_tokenizer();  // Qwen2's files write "" for no prefix and suffix
    t["model"]["continuing_subword_prefix"] = "";
    t["model"]["end_of_word_suffix"] = "";
    cases.push_back({"empty subword prefix and word suffix", t});
  }
  {
    json t = test::hf::tiny_tokenizer();  // a repeated merge takes the later rank
    test::hf::add_merge(t, "r", "s");
    test::hf::add_merge(t, "e", "r");
    cases.push_back({"repeated merge", t});
  }
  {
    json t = test::hf::tiny_tokenizer();  // bytes missing from the vocab: dropped, or unk (fused or not)
    auto& vocab = t["model"]["vocab"];
    for (char c : std::string("zq\xE4")) vocab.erase(test::hf::byte_char(static_cast<unsigned char>(c)));
    vocab["<unk>"] = 1000;
    cases.push_back({"missing bytes dropped", t});
    t["model"]["unk_token"] = "<unk>";
    cases.push_back({"missing bytes unk", t});
    t["model"]["fuse_unk"] = true;
    cases.push_back({"missing bytes fused unk", t});
  }
  {
    json t = test::hf::tiny_tokenizer();  // added tokens of every supported kind, NFC, a template
    int next = t["model"]["vocab"].size();
    t["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}}}};
    auto added = [&](const std::string& content, int id, bool special, bool normalized, bool lstrip,
                     bool rstrip) {
      t["added_tokens"].push_back({{"id", id},
                                   {"content", content},
                                   {"single_word", false},
                                   {"lstrip", lstrip},
                                   {"rstrip", rstrip},
                                   {"normalized", normalized},
                                   {"special", special}});
    };
    added("<|im_start|>", next, true, false, false, false);
    added("<|im_end|>", next + 1, true, false, false, false);
    added("the", test::hf::tiny_id(t, "the"), false, false, false, false);  // already in the vocab
    added("caf\u00E9", next + 2, false, true, false, false);                // matched after NFC
    added("[MASK]", next + 3, true, false, true, true);
    added("<|im", next + 4, false, false, false, false);  // a prefix of a longer one
    t["post_processor"] = {
        {"type", "Sequence"},
        {"processors",
         {{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}},
          {{"type", "TemplateProcessing"},
           {"single",
            {{{"SpecialToken", {{"id", "<|im_start|>"}, {"type_id", 0}}}},
             {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
             {{"SpecialToken", {{"id", "<|im_end|>"}, {"type_id", 0}}}}}},
           {"pair", json::array()},
           {"special_tokens",
            {{"<|im_start|>", {{"id", "<|im_start|>"}, {"ids", {next}}, {"tokens", {"<|im_start|>"}}}},
             {"<|im_end|>", {{"id", "<|im_end|>"}, {"ids", {next + 1}}, {"tokens", {"<|im_end|>"}}}}}}}}}};
    t["decoder"] = {
        {"type", "Sequence"},
        {"decoders",
         {{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}}}};
    cases.push_back({"added tokens, NFC, template", t});
    json legacy = t;
    for (auto& m : legacy["model"]["merges"]) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
    legacy["model"]["merges"].insert(legacy["model"]["merges"].begin(), "#version: 0.2");
    cases.push_back({"legacy merges with #version line", legacy});
  }
  {
    json t = test::hf::tiny_tokenizer();  // two ByteLevel decoders: the second decodes the first's text
    t["decoder"] = {{"type", "Sequence"}, {"decoders", {t["decoder"], t["decoder"]}}};
    cases.push_back({"ByteLevel decoder twice", t});
  }

  auto texts = test::hf::hostile_corpus({"<|im_start|>", "[MASK]", "caf\u00E9", "the"});
  std::vector<std::pair<std::string, std::vector<std::string>>> jobs;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    std::string path = d.file("case" + std::to_string(i) + ".json");
    test::write(path, cases[i].second.dump());
    jobs.push_back({path, texts});
  }
  auto refs = test::hf::tokenizers_reference(jobs);
  ASSERT_EQ(refs.size(), cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].first);
    expect_equal(*HfTokenizer::load(jobs[i].first), texts, refs[i], cases[i].first);
  }
}

}  // namespace
}  // namespace sft::data
