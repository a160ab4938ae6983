// Never materialising what a rank does not own: a model built without storage gets its
// values straight into the optimizer's flat buffers, from the seeded init or from the
// safetensors files, chunk by chunk under ZeRO-3; a model no rank holds whole is exported
// one parameter at a time. Checked against the plain path (a materialised model, then
// init_weights / load_weights / save_hf_model) and with the CPU allocator's counter.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "sft/model/hf_checkpoint.h"
#include "sft/model/safetensors.h"
#include "sft/train/memory_tracker.h"
#include "sft/train/optimizer.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft::train {
namespace {

model::LlamaConfig config(bool tied = false) {
  return model::LlamaConfig::from_json({{"hidden_size", 64},
                                        {"intermediate_size", 176},
                                        {"num_hidden_layers", 3},
                                        {"num_attention_heads", 4},
                                        {"num_key_value_heads", 2},
                                        {"vocab_size", 301},  // odd sizes: units do not split evenly
                                        {"max_position_embeddings", 64},
                                        {"tie_word_embeddings", tied}},
                                       "test");
}

// The reference: a materialised model's parameters laid out as the optimizer lays them out.
at::Tensor reference_flat(const model::Llama& m, const FlatLayout& layout) {
  at::Tensor flat = at::zeros({layout.total});
  for (const auto& slot : layout.slots)
    flat.narrow(0, slot.offset, slot.numel).copy_(m.parameters()[slot.param].tensor.reshape({-1}));
  return flat;
}

// Rank `rank`'s ZeRO-3 chunks of the reference, back to back.
at::Tensor reference_chunks(const at::Tensor& flat, const FlatLayout& layout, int rank) {
  std::vector<at::Tensor> parts;
  for (std::size_t u = 0; u < layout.units.size(); ++u)
    parts.push_back(flat.narrow(0, layout.units[u].offset + rank * layout.chunk(u), layout.chunk(u)));
  return at::cat(parts);
}

void expect_every_rank_gets_its_chunks(
    const model::Llama& reference, const std::function<model::ParamSource(const model::Llama&)>& source_for) {
  for (int world : {1, 3}) {
    const FlatLayout layout = FlatLayout::build(reference, world);
    const at::Tensor flat = reference_flat(reference, layout);
    for (int rank = 0; rank < world; ++rank) {
      model::Llama meta(reference.config(), c10::kCPU, c10::kFloat, /*materialize=*/false);
      EXPECT_TRUE(meta.parameters()[0].tensor.is_meta());
      const model::ParamSource source = source_for(meta);
      FlatAdamW opt(meta, {}, world, rank, Sharding::for_strategy(config::DistStrategy::kZero3), &source);
      EXPECT_TRUE(at::equal(opt.params(), reference_chunks(flat, layout, rank)))
          << world << " ranks, rank " << rank;
    }
    // Unsharded (ddp, zero1/2): the whole flat buffer, the model's parameters views of it.
    model::Llama meta(reference.config(), c10::kCPU, c10::kFloat, /*materialize=*/false);
    const model::ParamSource source = source_for(meta);
    FlatAdamW opt(meta, {}, world, 0, Sharding::for_strategy(config::DistStrategy::kZero2), &source);
    EXPECT_TRUE(at::equal(opt.params(), flat));
    for (std::size_t i = 0; i < meta.parameters().size(); ++i)
      EXPECT_TRUE(at::equal(meta.parameters()[i].tensor, reference.parameters()[i].tensor))
          << meta.parameters()[i].name;
  }
}

TEST(ShardedBuild, EachRanksShardsOfTheSeededInitEqualTheUnshardedInit) {
  for (bool tied : {false, true}) {
    model::Llama reference(config(tied));
    reference.init_weights(7);
    expect_every_rank_gets_its_chunks(reference, [](const model::Llama& m) { return m.init_source(7); });
  }
}

TEST(ShardedBuild, EachRankReadsItsShardsOfAShardedCheckpointInAnyDtype) {
  test::TempDir d;
  model::Llama reference(config());
  reference.init_weights(3);
  model::SaveOptions so;
  so.max_shard_bytes = 40000;  // several files
  model::save_hf_model(reference, d.file("fp32"), so);
  ASSERT_TRUE(fs::exists(d.file("fp32/model.safetensors.index.json")));
  expect_every_rank_gets_its_chunks(
      reference, [&](const model::Llama& m) { return model::weights_source(m, d.file("fp32")); });
  // bf16 on disk: converted on the way, equal to loading the whole folder.
  so.dtype = c10::kBFloat16;
  model::save_hf_model(reference, d.file("bf16"), so);
  auto loaded = model::load_hf_model(d.file("bf16"), c10::kCPU, c10::kFloat);
  expect_every_rank_gets_its_chunks(
      *loaded, [&](const model::Llama& m) { return model::weights_source(m, d.file("bf16")); });
}

// A model ~1 MB in fp32 on 8 ZeRO-3 ranks: building one rank's state (parameters, gradients
// and both moments: 16 bytes per owned parameter) never holds the whole model, only its
// chunks and, from the seeded init, one parameter being drawn.
TEST(ShardedBuild, AZero3RankNeverHoldsTheWholeModel) {
  CpuMemoryTracker::install();
  model::LlamaConfig cfg = config();
  const std::int64_t full = model::Llama(cfg, c10::kCPU, c10::kFloat, false).num_parameters() * 4;
  std::int64_t largest = 0;
  for (const auto& [name, shape] : model::expected_parameters(cfg)) {
    std::int64_t n = 4;
    for (auto s : shape) n *= s;
    largest = std::max(largest, n);
  }
  const int world = 8;
  model::Llama meta(cfg, c10::kCPU, c10::kFloat, /*materialize=*/false);
  const model::ParamSource source = meta.init_source(1);
  const std::int64_t before = CpuMemoryTracker::current_bytes();
  CpuMemoryTracker::reset_peak();
  FlatAdamW opt(meta, {}, world, 3, Sharding::for_strategy(config::DistStrategy::kZero3), &source);
  const std::int64_t peak = CpuMemoryTracker::peak_bytes() - before;
  const std::int64_t owned = opt.params().numel() * 4;
  EXPECT_GE(peak, 4 * owned) << "the tracker sees the four flat buffers";
  EXPECT_LE(peak, 4 * owned + 2 * largest + 4096) << "peak " << peak << " B, owned " << owned << " B";
  EXPECT_LT(peak, full) << "the whole fp32 model is " << full << " B";
}

// Streamed export: one parameter at a time handed to the writer (as a ZeRO-3 gather would),
// sharded files and an index planned from the shapes; loads back bit-exact, and memory
// holds about one parameter, not the model.
TEST(StreamedExport, OneParameterAtATimeGivesTheSameFolder) {
  test::TempDir d;
  model::Llama reference(config());
  reference.init_weights(5);
  model::SaveOptions so;
  so.max_shard_bytes = 40000;
  CpuMemoryTracker::install();
  std::size_t calls = 0;
  std::int64_t largest = 0;
  auto fetch = [&](std::size_t i) {
    EXPECT_EQ(i, calls++) << "in parameters() order, once each";
    at::Tensor t = reference.parameters()[i].tensor.detach().clone();  // a fresh copy, like a gather
    largest = std::max<std::int64_t>(largest, t.numel() * 4);
    return t;
  };
  const std::int64_t before = CpuMemoryTracker::current_bytes();
  CpuMemoryTracker::reset_peak();
  model::save_hf_model(reference.config(), fetch, d.file("streamed"), so);
  const std::int64_t peak = CpuMemoryTracker::peak_bytes() - before;
  EXPECT_EQ(calls, reference.parameters().size());
  EXPECT_LE(peak, 2 * largest + 65536) << "about one parameter in memory at a time";
  model::save_hf_model(reference, d.file("plain"), so);
  const auto files = fs::list_dir(d.file("streamed"));
  EXPECT_EQ(files, fs::list_dir(d.file("plain")));
  EXPECT_GT(std::count_if(files.begin(), files.end(),
                          [](const std::string& f) { return f.rfind("model-00", 0) == 0; }),
            2);
  EXPECT_NE(std::find(files.begin(), files.end(), "model.safetensors.index.json"), files.end());
  for (const auto& f : files)
    EXPECT_EQ(test::read(d.file("streamed/" + f)), test::read(d.file("plain/" + f))) << f;
  auto back = model::load_hf_model(d.file("streamed"), c10::kCPU, c10::kFloat);
  for (std::size_t i = 0; i < back->parameters().size(); ++i)
    EXPECT_TRUE(at::equal(back->parameters()[i].tensor, reference.parameters()[i].tensor));
}

}  // namespace
}  // namespace sft::train
