// The SFT loss: summed cross-entropy over trained tokens only.
//
// Only positions whose label is trained go through lm_head, so the (tokens x vocab) logits
// of masked prompt tokens are never computed (typically half of an SFT batch or more).
// The caller divides by the number of trained tokens of the whole optimizer step (all
// micro-batches, all ranks), so that splitting a batch differently gives the same update.
#pragma once

#include <ATen/core/Tensor.h>

#include "sft/model/llama.h"

namespace sft::train {

// hidden (B, T, D), labels (B, T) with -100 for untrained positions. Returns a 0-dim fp32
// tensor: the sum of -log p(label) over trained positions (0 when there are none).
at::Tensor masked_cross_entropy_sum(const model::Llama& model, const at::Tensor& hidden, const at::Tensor& labels);

}  // namespace sft::train
