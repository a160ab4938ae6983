// Batch: one micro-batch as tensors, ready for the model.
//
// Packed rows hold several samples; each sample's positions restart at 0 and segment_ids
// let a token attend only to earlier tokens of its own sample (block-diagonal causal), so
// packed samples never see each other. When every row holds one sample they are left
// undefined and the model uses a plain causal mask (trailing pads are never attended to by
// real tokens, and their labels are ignored).
//
// labels are where the trained-token flags (TokenizedDataset::trained) become next-token
// targets: labels[t] = ids[t+1] where trained[t+1], else kIgnoreIndex. A sample's first
// token is never a label, so trained_tokens counts the trained tokens after the first.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "sft/data/stage_stream.h"
#include "sft/model/ignore_index.h"

namespace sft::data {

using model::kIgnoreIndex;

struct Batch {
  at::Tensor input_ids;             // (B, T) int64
  at::Tensor labels;                // (B, T) int64: next token where trained, else kIgnoreIndex
  at::Tensor position_ids;          // (B, T) int64
  at::Tensor segment_ids;           // undefined, or (B, T) int32: sample index within the row, -1 = pad
  at::Tensor attention_mask;        // segment_ids as a dense (B, 1, T, T) bool mask, only when asked for
  at::Tensor trained_positions;     // (trained_tokens) int64: flat indices into labels != kIgnoreIndex
  std::int64_t tokens = 0;          // non-pad tokens
  std::int64_t trained_tokens = 0;  // labels != kIgnoreIndex
};

// REQUIRES: mb's samples index into `datasets`. pad_id < 0 pads with 0 (never attended).
Batch make_batch(const MicroBatch& mb, const StageStream::Datasets& datasets, std::int32_t pad_id,
                 bool with_attention_mask = false);

// One encoded sequence (Encoded's ids and trained) as a batch of one row (for scoring and tests).
Batch make_single_batch(const std::vector<std::int32_t>& ids, const std::vector<std::uint8_t>& trained);

}  // namespace sft::data
