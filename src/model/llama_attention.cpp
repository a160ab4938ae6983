// Llama's attention and decoder layer: layer_forward (norms, the fused q/k/v projection
// with its Qwen2 biases and Qwen3 q/k norms, rotary, attention, MLP), attention with causal, explicit-mask
// and cached-decoding cases, and per-sample attention of packed rows (varlen_attention) with its plan.
#include "sft/model/llama.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "sft/model/fused.h"
#include "sft/model/precision.h"
#include "sft/model/varlen.h"

namespace sft::model {

namespace {

at::Tensor repeat_kv(const at::Tensor& x, std::int64_t n_rep) {
  if (n_rep == 1) return x;
  auto s = x.sizes();  // (B, K, T, Dh) -> (B, K*n_rep, T, Dh); kv head j serves query heads j*n_rep..
  return x.unsqueeze(2).expand({s[0], s[1], n_rep, s[2], s[3]}).reshape({s[0], s[1] * n_rep, s[2], s[3]});
}

}  // namespace

// The plan of one packed micro-batch: per group of similar-length samples, the flattened
// (B * T) positions to gather (each sample padded to the group's longest by repeating its
// last position, masked by causality), and where the valid outputs go back.
struct Llama::VarlenPlan {
  struct Group {
    at::Tensor gather, rows, dest;  // int64, on the model's device
    std::int64_t count = 0, width = 0;
  };
  std::vector<Group> groups;
};

namespace {

std::shared_ptr<Llama::VarlenPlan> build_varlen_plan(const at::Tensor& segment_ids_host, c10::Device device) {
  at::Tensor seg = segment_ids_host.to(at::kInt).contiguous();
  const std::int64_t B = seg.size(0), T = seg.size(1);
  const auto* sp = seg.data_ptr<std::int32_t>();
  struct Span {
    std::int64_t start, len;  // start in the flattened (B * T) positions
  };
  std::vector<Span> spans;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T;) {
      const std::int32_t id = sp[b * T + t];
      std::int64_t e = t + 1;
      while (e < T && sp[b * T + e] == id) ++e;
      if (id >= 0) spans.push_back({b * T + t, e - t});
      t = e;
    }
  std::stable_sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) { return x.len > y.len; });
  std::vector<std::int64_t> lengths;
  for (const Span& s : spans) lengths.push_back(s.len);
  auto plan = std::make_shared<Llama::VarlenPlan>();
  const bool pin = device.is_cuda();
  auto upload = [&](const std::vector<std::int64_t>& v) {
    at::Tensor t = at::tensor(v, at::TensorOptions().dtype(at::kLong));
    if (pin) t = t.pin_memory();
    return t.to(device, /*non_blocking=*/pin);
  };
  for (const VarlenGroup& group : varlen_groups(lengths)) {
    const std::int64_t lmax = group.width, n = static_cast<std::int64_t>(group.count);
    std::vector<std::int64_t> gather(static_cast<std::size_t>(n * lmax)), rows, dest;
    for (std::int64_t i = 0; i < n; ++i) {
      const Span& s = spans[group.first + static_cast<std::size_t>(i)];
      for (std::int64_t j = 0; j < lmax; ++j) {
        gather[static_cast<std::size_t>(i * lmax + j)] = s.start + std::min(j, s.len - 1);
        if (j < s.len) {
          rows.push_back(i * lmax + j);
          dest.push_back(s.start + j);
        }
      }
    }
    plan->groups.push_back({upload(gather), upload(rows), upload(dest), n, lmax});
  }
  return plan;
}

}  // namespace

void Llama::plan_packed(const at::Tensor& segment_ids_host, const at::Tensor& segment_ids) const {
  plan_ = build_varlen_plan(segment_ids_host, device_);
  plan_segment_ids_ = segment_ids;
}

std::shared_ptr<const Llama::VarlenPlan> Llama::varlen_plan(const at::Tensor& segment_ids) const {
  if (plan_ && plan_segment_ids_.is_same(segment_ids)) return plan_;
  ++host_reads_;  // not planned ahead: read the segment ids back once for this micro-batch
  plan_ = build_varlen_plan(segment_ids.to(at::kCPU), device_);
  plan_segment_ids_ = segment_ids;
  return plan_;
}

// Packed rows, attention per sample: each sample attends causally to itself only, and the
// cost follows the samples' own lengths (sum of L^2) instead of the row's (T^2). Samples are
// gathered into groups of similar length (varlen.h), run through causal attention, and
// scattered back; pad positions get zeros. The index tensors come from the plan, built once
// per micro-batch, so no layer reads anything back to the host.
at::Tensor Llama::varlen_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& segment_ids) const {
  const std::int64_t B = q.size(0), H = q.size(1), T = q.size(2), Dh = q.size(3);
  const std::shared_ptr<const VarlenPlan> plan = varlen_plan(segment_ids);
  at::Tensor qf = q.transpose(1, 2).reshape({B * T, H, Dh});
  at::Tensor kf = k.transpose(1, 2).reshape({B * T, H, Dh});
  at::Tensor vf = v.transpose(1, 2).reshape({B * T, H, Dh});
  // The groups' rows are scattered back in one index_copy: one per group would copy the
  // whole output each time, forward and backward.
  std::vector<at::Tensor> rows, dest;
  for (const auto& g : plan->groups) {
    auto pick = [&](const at::Tensor& f) {
      return f.index_select(0, g.gather).view({g.count, g.width, H, Dh}).transpose(1, 2);
    };
    at::Tensor o = attention(pick(qf), pick(kf), pick(vf), at::Tensor(), 0);  // causal, (n, H, lmax, Dh)
    rows.push_back(o.transpose(1, 2).reshape({g.count * g.width, H * Dh}).index_select(0, g.rows));
    dest.push_back(g.dest);
  }
  at::Tensor out = at::zeros({B * T, H * Dh}, qf.options());
  if (!rows.empty()) out = out.index_copy(0, at::cat(dest), at::cat(rows));
  return out.view({B, T, H, Dh}).transpose(1, 2);
}

at::Tensor Llama::attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& attention_mask, std::int64_t offset) const {
  if (attention_mask.defined() && attention_mask.dim() == 2)
    return varlen_attention(q, k, v, attention_mask);  // (B, T) segment ids
  const std::int64_t Tq = q.size(2), Tk = k.size(2);
  at::Tensor m = attention_mask;
  bool causal = !m.defined();
  if (causal && offset > 0 && Tq > 1) {
    // Decoding with a cache: query i sits at position offset + i.
    at::Tensor qi = at::arange(offset, offset + Tq, at::TensorOptions().dtype(at::kLong).device(q.device()));
    at::Tensor kj = at::arange(Tk, at::TensorOptions().dtype(at::kLong).device(q.device()));
    m = (kj.unsqueeze(0) <= qi.unsqueeze(1)).view({1, 1, Tq, Tk});
    causal = false;
  } else if (causal && Tq == 1) {
    causal = false;  // a single new token attends to everything cached
  }
  if (attn_impl_ != AttentionImpl::kExplicit) {
    return at::scaled_dot_product_attention(q, k, v,
                                            m.defined() ? std::optional<at::Tensor>(m) : std::nullopt,
                                            /*dropout_p=*/0.0, /*is_causal=*/causal);
  }
  // q arrives pre-scaled by 1/sqrt(Dh) (see layer_forward).
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1));  // (B, H, Tq, Tk)
  if (causal) {
    at::Tensor future = at::ones({Tq, Tk}, at::TensorOptions().dtype(at::kBool).device(q.device())).triu(1);
    scores.masked_fill_(future, -std::numeric_limits<float>::infinity());
  } else if (m.defined()) {
    scores.masked_fill_(m.logical_not(), -std::numeric_limits<float>::infinity());
  }
  // fp32 scores: HF's fp32 softmax. bf16 scores (autocast): softmax straight to bf16; the
  // CPU and CUDA kernels compute it in fp32 internally and round the same probabilities as
  // HF's softmax(dtype=float32).to(bf16), without two (B, H, T, T) casts each way.
  at::Tensor probs = at::softmax(scores, -1);
  return at::matmul(probs, v);
}

at::Tensor Llama::layer_forward(std::size_t layer, const at::Tensor& x, const at::Tensor& cos,
                                const at::Tensor& sin, const at::Tensor& attention_mask, KvCache* cache,
                                const LayerWeights& w) const {
  const std::int64_t B = x.size(0), T = x.size(1);
  const std::int64_t H = cfg_.num_attention_heads, K = cfg_.num_key_value_heads, Dh = cfg_.head_dim;
  // Under autocast the norms write the compute dtype (at::linear would cast per projection).
  const auto type = x.is_cuda() ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
  const auto compute = autocast_enabled(type) ? autocast_dtype(type) : at::result_type(x, w.input_norm);
  // A norm weight gathered in bf16 next to fp32 activations (ZeRO-3's bf16 gathers) is
  // widened (D elements), so the norm runs its fused kernel as it does for fp32 weights.
  auto norm_weight = [&](const at::Tensor& n) {
    return n.scalar_type() == x.scalar_type() ? n : n.to(x.scalar_type());
  };

  // q, k, v in one GEMM (a wider output runs faster than three narrow ones), then split and
  // rotated in one pass (sft/model/fused.h), in the activations' dtype as HF does. The
  // explicit attention folds its 1/sqrt(Dh) into q's tables instead of scaling the (T x T)
  // scores (exact when Dh is a power of four, as 64 and 256 are; within rounding otherwise).
  // Qwen2's biases are added by the same GEMM (q|k|v's biases stacked as the weights are).
  // Qwen3 normalises each head of q and k over Dh before rotary (HF: q_norm(q_proj(h))),
  // with the fused RMSNorm on the split parts; the rotary kernel then takes them back as one
  // (B, T, (H + 2K) Dh) tensor: a copy of q, k and v per layer rather than a fused
  // norm-and-rotary kernel whose backward would reduce the norm weights' gradient too.
  at::Tensor h = fused_rms_norm(x, norm_weight(w.input_norm), cfg_.rms_norm_eps, compute);
  const at::Tensor w_qkv = w.stacked() ? w.qkv : at::cat({w.q, w.k, w.v}, 0);
  at::Tensor qkv;  // (B, T, (H + 2K) Dh)
  if (cfg_.qkv_bias())
    qkv = at::linear(h, w_qkv, w.stacked() ? w.qkv_bias : at::cat({w.q_bias, w.k_bias, w.v_bias}, 0));
  else
    qkv = at::linear(h, w_qkv);
  if (cfg_.qk_norm()) {
    // The activations' dtype as HF's norm returns it for matching weights; under autocast
    // (bf16 activations, fp32 weights) the norm rounds to bf16 where HF keeps fp32 until
    // attention, which differs from HF by bf16 rounding, not more.
    auto head_weight = [&](const at::Tensor& n) {
      return n.scalar_type() == qkv.scalar_type() ? n : n.to(qkv.scalar_type());
    };
    const auto parts = qkv.split_with_sizes({H * Dh, K * Dh, K * Dh}, -1);
    at::Tensor q = fused_rms_norm(parts[0].view({B, T, H, Dh}), head_weight(w.q_norm), cfg_.rms_norm_eps,
                                  qkv.scalar_type());
    at::Tensor k = fused_rms_norm(parts[1].view({B, T, K, Dh}), head_weight(w.k_norm), cfg_.rms_norm_eps,
                                  qkv.scalar_type());
    qkv = at::cat({q.view({B, T, H * Dh}), k.view({B, T, K * Dh}), parts[2]}, -1);
  }
  const bool explicit_attn = attn_impl_ == AttentionImpl::kExplicit;
  const double scale = explicit_attn ? 1.0 / std::sqrt(static_cast<double>(Dh)) : 1.0;
  auto [q, k, v] = fused_qkv_rotary(qkv, cos, sin, H, K, scale);  // (B, heads, T, Dh)

  std::int64_t offset = 0;
  if (cache) {
    offset = cache->length;
    TORCH_CHECK(offset + T <= cache->k[layer].size(2), "KV cache capacity ", cache->k[layer].size(2),
                " exceeded");
    cache->k[layer].narrow(2, offset, T).copy_(k);
    cache->v[layer].narrow(2, offset, T).copy_(v);
    k = cache->k[layer].narrow(2, 0, offset + T);
    v = cache->v[layer].narrow(2, 0, offset + T);
  }
  at::Tensor att = attention(q, repeat_kv(k, H / K), repeat_kv(v, H / K), attention_mask, offset);
  att = att.transpose(1, 2).reshape({B, T, H * Dh});
  at::Tensor x2 = x + at::linear(att, w.o);

  // gate and up in one GEMM too.
  at::Tensor h2 = fused_rms_norm(x2, norm_weight(w.post_norm), cfg_.rms_norm_eps, compute);
  at::Tensor gu = at::linear(h2, w.stacked() ? w.gate_up : at::cat({w.gate, w.up}, 0));  // (B, T, 2F)
  at::Tensor mlp = at::linear(fused_swiglu(gu), w.down);
  return x2 + mlp;
}

}  // namespace sft::model
