#include "sft/data/batch.h"

#include <ATen/Functions.h>

namespace sft::data {

Batch make_batch(const MicroBatch& mb, const StageStream::Datasets& datasets, std::int32_t pad_id,
                 bool with_attention_mask) {
  const std::int64_t B = static_cast<std::int64_t>(mb.rows.size());
  const std::int64_t T = mb.width;
  Batch b;
  b.input_ids = at::full({B, T}, pad_id < 0 ? 0 : pad_id, at::kLong);
  b.labels = at::full({B, T}, kIgnoreIndex, at::kLong);
  b.position_ids = at::zeros({B, T}, at::kLong);
  auto* ids = b.input_ids.data_ptr<std::int64_t>();
  auto* lab = b.labels.data_ptr<std::int64_t>();
  auto* pos = b.position_ids.data_ptr<std::int64_t>();
  bool packed = false;
  for (const auto& row : mb.rows) packed |= row.samples.size() > 1;
  std::vector<std::int32_t> segment(static_cast<std::size_t>(B * T), -1);
  std::vector<std::int64_t> positions;  // trained_positions

  for (std::int64_t r = 0; r < B; ++r) {
    std::int64_t off = 0;
    const auto& row = mb.rows[static_cast<std::size_t>(r)];
    for (std::size_t k = 0; k < row.samples.size(); ++k) {
      const auto& ref = row.samples[k];
      const auto& ds = *datasets[static_cast<std::size_t>(ref.dataset)];
      const std::int64_t L = std::min(ds.length(ref.record), T - off);
      const std::int32_t* sid = ds.ids(ref.record);
      const std::uint8_t* trained = ds.trained(ref.record);
      for (std::int64_t t = 0; t < L; ++t) {
        std::int64_t i = r * T + off + t;
        ids[i] = sid[t];
        pos[i] = t;
        segment[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(k);
        if (t + 1 < L && trained[t + 1]) {
          lab[i] = sid[t + 1];
          positions.push_back(i);
        }
      }
      off += L;
      b.tokens += L;
    }
  }
  // Positions are visited in order, so the index is sorted as nonzero() would give it.
  b.trained_tokens = static_cast<std::int64_t>(positions.size());
  b.trained_positions = at::from_blob(positions.data(), {b.trained_tokens}, at::kLong).clone();
  if (packed) b.segment_ids = at::from_blob(segment.data(), {B, T}, at::kInt).clone();
  if (packed && with_attention_mask) {
    b.attention_mask = at::zeros({B, 1, T, T}, at::kBool);
    auto* m = b.attention_mask.data_ptr<bool>();
    for (std::int64_t r = 0; r < B; ++r) {
      const std::int32_t* seg = segment.data() + r * T;
      bool* mr = m + r * T * T;
      for (std::int64_t q = 0; q < T; ++q) {
        if (seg[q] < 0) {
          mr[q * T + q] = true;  // a pad attends to itself only: keeps softmax finite
          continue;
        }
        // Samples are contiguous: walk back from q while the segment matches.
        for (std::int64_t k = q; k >= 0 && seg[k] == seg[q]; --k) mr[q * T + k] = true;
      }
    }
  }
  return b;
}

Batch make_single_batch(const std::vector<std::int32_t>& ids, const std::vector<std::uint8_t>& trained) {
  const std::int64_t T = static_cast<std::int64_t>(ids.size());
  Batch b;
  b.input_ids = at::empty({1, T}, at::kLong);
  b.labels = at::full({1, T}, kIgnoreIndex, at::kLong);
  b.position_ids = at::arange(T, at::kLong).unsqueeze(0);
  auto* p = b.input_ids.data_ptr<std::int64_t>();
  auto* l = b.labels.data_ptr<std::int64_t>();
  std::vector<std::int64_t> positions;  // trained_positions
  for (std::int64_t t = 0; t < T; ++t) {
    p[t] = ids[static_cast<std::size_t>(t)];
    if (t + 1 < T && trained[static_cast<std::size_t>(t + 1)]) {
      l[t] = ids[static_cast<std::size_t>(t + 1)];
      positions.push_back(t);
    }
  }
  b.trained_tokens = static_cast<std::int64_t>(positions.size());
  b.trained_positions = at::from_blob(positions.data(), {b.trained_tokens}, at::kLong).clone();
  b.tokens = T;
  return b;
}

}  // namespace sft::data
