#include "sft/train/loss.h"

#include <ATen/ATen.h>

#include "sft/data/batch.h"

namespace sft::train {

at::Tensor masked_cross_entropy_sum(const model::Llama& model, const at::Tensor& hidden, const at::Tensor& labels) {
  at::Tensor flat_labels = labels.reshape({-1});
  at::Tensor idx = (flat_labels != data::kIgnoreIndex).nonzero().squeeze(1);  // (N)
  if (idx.numel() == 0) return (hidden.sum() * 0.0).to(at::kFloat);            // keeps the graph connected
  at::Tensor h = hidden.reshape({-1, hidden.size(-1)}).index_select(0, idx);   // (N, D)
  at::Tensor logits = model.lm_head(h).to(at::kFloat);                         // (N, V), fp32 as HF upcasts
  return at::cross_entropy_loss(logits, flat_labels.index_select(0, idx), /*weight=*/{}, at::Reduction::Sum);
}

}  // namespace sft::train
