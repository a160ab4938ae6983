// The data cache: reused when valid, rebuilt when stale or corrupt, never trusted blindly.
#include "sft/data/tokenized_dataset.h"

#include <gtest/gtest.h>

#include <fstream>

#include "sft/util/fs.h"
#include "test_util.h"

namespace sft::data {
namespace {

struct Fixture {
  test::TempDir dir;
  config::DatasetSpec spec;
  config::DataSpec data;
  std::shared_ptr<const Tokenizer> tok = Tokenizer::load(test::tiny("tokenizer.model"));
  ChatTemplate tmpl = ChatTemplate::create("vicuna_v1.1");
  Fixture() {
    test::write(dir.file("m.jsonl"), test::read(test::tiny("math_test.jsonl")));
    spec.name = "math";
    spec.path = dir.file("m.jsonl");
    spec.format = config::Format::kGsm8k;
    data.cache_dir = dir.file("cache");
    data.max_seq_len = 512;
  }
};

TEST(DataCache, SecondPrepareReusesTheCacheWithIdenticalContents) {
  Fixture f;
  bool rebuilt = false;
  auto a = prepare_dataset(f.spec, f.data, *f.tok, f.tmpl, &rebuilt);
  EXPECT_TRUE(rebuilt);
  auto b = prepare_dataset(f.spec, f.data, *f.tok, f.tmpl, &rebuilt);
  EXPECT_FALSE(rebuilt);
  ASSERT_EQ(a->size(), 300);
  ASSERT_EQ(b->size(), 300);
  for (std::int64_t i = 0; i < a->size(); ++i) {
    ASSERT_EQ(a->length(i), b->length(i));
    EXPECT_TRUE(std::equal(a->ids(i), a->ids(i) + a->length(i), b->ids(i)));
    EXPECT_TRUE(std::equal(a->trained(i), a->trained(i) + a->length(i), b->trained(i)));
    EXPECT_EQ(a->origin(i).line, b->origin(i).line);
    EXPECT_EQ(a->origin(i).id, b->origin(i).id);
  }
  EXPECT_EQ(a->stats().tokens, b->stats().tokens);
}

TEST(DataCache, ChangedDataOrSettingsGetANewCache) {
  Fixture f;
  auto a = prepare_dataset(f.spec, f.data, *f.tok, f.tmpl);
  bool rebuilt = false;
  auto other_tmpl = ChatTemplate::create("alpaca");
  auto b = prepare_dataset(f.spec, f.data, *f.tok, other_tmpl, &rebuilt);
  EXPECT_TRUE(rebuilt);
  EXPECT_NE(a->key(), b->key());
  std::ofstream(f.spec.path, std::ios::app) << "{\"question\": \"new?\", \"answer\": \"x\\n#### 1\"}\n";
  auto c = prepare_dataset(f.spec, f.data, *f.tok, f.tmpl, &rebuilt);
  EXPECT_TRUE(rebuilt);
  EXPECT_EQ(c->size(), 301);
}

TEST(DataCache, ACorruptCacheIsDetectedAndRebuilt) {
  Fixture f;
  auto a = prepare_dataset(f.spec, f.data, *f.tok, f.tmpl);
  const std::string ids = fs::join(a->dir(), "ids.bin");
  std::string bytes = test::read(ids);
  bytes[bytes.size() / 2] ^= 0x5a;
  test::write(ids, bytes);
  bool rebuilt = false;
  auto b = prepare_dataset(f.spec, f.data, *f.tok, f.tmpl, &rebuilt);
  EXPECT_TRUE(rebuilt);
  for (std::int64_t i = 0; i < a->size(); ++i)
    EXPECT_TRUE(std::equal(a->ids(i), a->ids(i) + a->length(i), b->ids(i)));
  // Truncated file: also rebuilt.
  test::write(fs::join(b->dir(), "mask.bin"), "x");
  prepare_dataset(f.spec, f.data, *f.tok, f.tmpl, &rebuilt);
  EXPECT_TRUE(rebuilt);
}

TEST(DataCache, TruncationAndZeroTargetSamplesAreCountedNotTrained) {
  Fixture f;
  f.data.max_seq_len = 40;  // the vicuna prompt alone is longer than this for most records
  auto t = prepare_dataset(f.spec, f.data, *f.tok, f.tmpl);
  EXPECT_GT(t->stats().truncated, 0);
  EXPECT_GT(t->stats().zero_target, 0);
  EXPECT_EQ(t->stats().kept + t->stats().zero_target + t->stats().too_long, 300);
  for (std::int64_t i = 0; i < t->size(); ++i) {
    EXPECT_LE(t->length(i), 40);
    if (t->status(i) == SampleStatus::kZeroTarget) EXPECT_EQ(t->trained_tokens(i), 0);
  }
  f.data.truncation = config::Truncation::kDrop;
  auto d = prepare_dataset(f.spec, f.data, *f.tok, f.tmpl);
  EXPECT_EQ(d->stats().truncated, 0);
  EXPECT_GT(d->stats().too_long, 0);
}

}  // namespace
}  // namespace sft::data
