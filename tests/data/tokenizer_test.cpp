// sentencepiece linked into a LibTorch process (no protobuf clash with pip LibTorch 2.x): real models,
// special ids, continuation encoding without the dummy-prefix space.
#include "sft/data/tokenizer.h"

#include <gtest/gtest.h>

#include "sft/util/error.h"
#include "test_util.h"

namespace sft::data {
namespace {

TEST(Tokenizer, TinyModelHasLlamaStyleSpecialIds) {
  auto t = Tokenizer::load(test::tiny("tokenizer.model"));
  EXPECT_EQ(t->vocab_size(), 1024);
  EXPECT_EQ(t->unk_id(), 0);
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  EXPECT_EQ(t->pad_id(), -1);
  EXPECT_TRUE(t->adds_dummy_prefix());
  for (std::string s :
       {"Sam has 12 apples.", "def f(x):\n    return x * 3\n", "  two  spaces\tand tab", "Ωμέγα café ✓"})
    EXPECT_EQ(t->decode(t->encode(s)), s) << s;
}

TEST(Tokenizer, ContinuationEncodingAddsNoSpace) {
  auto t = Tokenizer::load(test::tiny("tokenizer.model"));
  EXPECT_EQ(t->decode(t->encode_continuation("x")), "x");
  auto a = t->encode("ASSISTANT: 19");
  auto head = t->encode("ASSISTANT:");
  auto tail = t->encode_continuation(" 19");
  std::vector<std::int32_t> joined = head;
  joined.insert(joined.end(), tail.begin(), tail.end());
  EXPECT_EQ(joined, a);
}

TEST(Tokenizer, MissingOrInvalidModelsAreClearErrors) {
  EXPECT_THROW(Tokenizer::load("/no/such/tokenizer.model"), Error);
  test::TempDir d;
  test::write(d.file("bad.model"), "not a model");
  try {
    Tokenizer::load(d.file("bad.model"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a sentencepiece model"), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, RealLlama2TokenizerMatchesReferenceIds) {
  SFT_REQUIRE_SHARED_DATA();
  auto t = Tokenizer::load(test::shared_data() + "/tokenizers/llama2/tokenizer.model");
  EXPECT_EQ(t->vocab_size(), 32000);
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  EXPECT_EQ(t->pad_id(), -1);
  EXPECT_EQ(t->encode("Hello world"), (std::vector<std::int32_t>{15043, 3186}));
  EXPECT_EQ(t->piece(15043), "\xe2\x96\x81Hello");
  // "ASSISTANT:" then " Natalia": the continuation is exactly the whole-string tail.
  auto whole = t->encode("USER: hi ASSISTANT: Natalia sold 48 clips");
  auto head = t->encode("USER: hi ASSISTANT:");
  auto tail = t->encode_continuation(" Natalia sold 48 clips");
  head.insert(head.end(), tail.begin(), tail.end());
  EXPECT_EQ(head, whole);
  // A literal "</s>" in text is not the EOS id.
  for (auto id : t->encode("a</s>b")) EXPECT_NE(id, 2);
}

}  // namespace
}  // namespace sft::data
