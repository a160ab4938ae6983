#include "sft/model/generate.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <limits>

#include "sft/model/precision.h"
#include "sft/util/error.h"

namespace sft::model {

double generation_bytes_per_row(const LlamaConfig& c, std::int64_t capacity, int dtype_bytes) {
  const double elem = dtype_bytes;
  const double kv =
      2.0 * static_cast<double>(c.num_hidden_layers * c.num_key_value_heads * c.head_dim) * elem;
  // The prefill's activations, spread over the capacity: a fit to a 50M-parameter model's
  // measured generation (tests/dist/memory_plan_test.cpp).
  const double act = 2.0 * static_cast<double>(c.hidden_size) + static_cast<double>(c.intermediate_size);
  return static_cast<double>(capacity) * (kv + act * elem) + 2.0 * 4.0 * static_cast<double>(c.vocab_size);
}

std::vector<std::optional<double>> score(const Llama& model, const std::vector<std::int64_t>& ids,
                                         bool bf16) {
  std::vector<std::optional<double>> out(ids.size());
  if (ids.size() < 2) return out;
  for (auto id : ids)
    if (id < 0 || id >= model.config().vocab_size)
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                  std::to_string(model.config().vocab_size) + ")");
  at::NoGradGuard ng;
  const auto T = static_cast<std::int64_t>(ids.size());
  at::Tensor input = at::tensor(ids, at::kLong).view({1, T}).to(model.device());
  at::Tensor pos = at::arange(T, at::TensorOptions().dtype(at::kLong).device(model.device())).view({1, T});
  at::Tensor logits;
  {
    AutocastGuard autocast(model.device(), at::kBFloat16, bf16);
    logits = model.forward(input, pos);
  }
  at::Tensor lp = at::log_softmax(logits[0].to(at::kFloat), -1);  // (T, V)
  at::Tensor next = input[0].slice(0, 1).unsqueeze(1);            // (T-1, 1)
  at::Tensor picked = lp.slice(0, 0, T - 1).gather(1, next).squeeze(1).to(at::kDouble).cpu();
  auto acc = picked.accessor<double, 1>();
  for (std::int64_t i = 1; i < T; ++i) out[static_cast<std::size_t>(i)] = acc[i - 1];
  return out;
}

namespace {

std::int64_t sample(const at::Tensor& logits_row, const GenerateOptions& o, at::Generator& gen) {
  if (o.temperature <= 0) return logits_row.argmax().item<std::int64_t>();
  at::Tensor l = logits_row.to(at::kFloat).cpu() / o.temperature;
  if (o.top_k > 0 && o.top_k < l.size(0)) {
    at::Tensor kth = std::get<0>(l.topk(o.top_k)).min();
    l = l.masked_fill(l < kth, -std::numeric_limits<float>::infinity());
  }
  if (o.top_p < 1.0) {
    auto [sorted, idx] = l.sort(/*dim=*/-1, /*descending=*/true);
    at::Tensor cum = sorted.softmax(-1).cumsum(-1);
    // Drop tokens once the mass before them already reaches top_p (keep at least one).
    at::Tensor drop = (cum - sorted.softmax(-1)) >= o.top_p;
    at::Tensor masked = sorted.masked_fill(drop, -std::numeric_limits<float>::infinity());
    l = at::full_like(l, -std::numeric_limits<float>::infinity()).scatter(0, idx, masked);
  }
  at::Tensor probs = l.softmax(-1);
  return at::multinomial(probs, 1, /*replacement=*/false, gen).item<std::int64_t>();
}

// The longest prompt's length; an empty prompt is an error.
std::int64_t longest_prompt(const std::vector<std::vector<std::int64_t>>& prompts) {
  std::int64_t maxlen = 0;
  for (const auto& p : prompts) {
    if (p.empty()) throw Error("generate: empty prompt");
    maxlen = std::max<std::int64_t>(maxlen, static_cast<std::int64_t>(p.size()));
  }
  return maxlen;
}

// The prompts left-padded: (B, maxlen) ids and per-row positions, the (B, capacity) key
// validity (on `dev`), and each row's next position.
struct LeftPadded {
  at::Tensor ids, valid, pos;
  std::vector<std::int64_t> next_pos;
};

LeftPadded left_pad(const std::vector<std::vector<std::int64_t>>& prompts, std::int64_t maxlen,
                    std::int64_t capacity, c10::Device dev) {
  const auto B = static_cast<std::int64_t>(prompts.size());
  auto lopts = at::TensorOptions().dtype(at::kLong);
  LeftPadded in;
  in.ids = at::zeros({B, maxlen}, lopts);
  in.valid = at::zeros({B, capacity}, at::TensorOptions().dtype(at::kBool));
  in.pos = at::zeros({B, maxlen}, lopts);
  in.next_pos.resize(prompts.size());
  for (std::int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[static_cast<std::size_t>(b)];
    const auto pad = maxlen - static_cast<std::int64_t>(p.size());
    for (std::size_t t = 0; t < p.size(); ++t) {
      in.ids[b][pad + static_cast<std::int64_t>(t)] = p[t];
      in.pos[b][pad + static_cast<std::int64_t>(t)] = static_cast<std::int64_t>(t);
    }
    in.valid[b].slice(0, pad, maxlen).fill_(true);
    in.valid[b].slice(0, maxlen).fill_(true);  // generated positions are always valid
    in.next_pos[static_cast<std::size_t>(b)] = static_cast<std::int64_t>(p.size());
  }
  in.valid = in.valid.to(dev);
  return in;
}

// Prefill: causal within the prompt, pads never attended to. Returns the last position's
// logits (B, V) on the CPU.
at::Tensor prefill(const Llama& model, const LeftPadded& in, const GenerateOptions& o, KvCache* cache) {
  const auto dev = model.device();
  const std::int64_t B = in.ids.size(0), maxlen = in.ids.size(1);
  at::Tensor causal = at::ones({maxlen, maxlen}, at::TensorOptions().dtype(at::kBool).device(dev)).tril();
  at::Tensor attention_mask =
      causal.view({1, 1, maxlen, maxlen}) & in.valid.slice(1, 0, maxlen).view({B, 1, 1, maxlen});
  // Pad queries attend to themselves so their (ignored) softmax stays finite.
  attention_mask =
      attention_mask |
      at::eye(maxlen, at::TensorOptions().dtype(at::kBool).device(dev)).view({1, 1, maxlen, maxlen});
  AutocastGuard autocast(dev, at::kBFloat16, o.bf16);
  at::Tensor h = model.forward_hidden(in.ids.to(dev), in.pos.to(dev), attention_mask, cache);
  return model.lm_head(h.select(1, maxlen - 1)).to(at::kFloat).cpu();
}

bool is_stop(const GenerateOptions& o, std::int64_t t) {
  return std::find(o.stop_ids.begin(), o.stop_ids.end(), t) != o.stop_ids.end();
}

// Samples the next token of every unfinished row into `next` (B, 1), ending the rows that
// stop. Returns whether any row goes on.
bool sample_next(const at::Tensor& last_logits, const GenerateOptions& o, at::Generator& gen,
                 std::vector<bool>& done, std::vector<Generation>& out,
                 std::vector<std::vector<std::int64_t>>& seq, at::Tensor& next) {
  bool any = false;
  for (std::int64_t b = 0; b < static_cast<std::int64_t>(out.size()); ++b) {
    auto bi = static_cast<std::size_t>(b);
    if (done[bi]) continue;
    std::int64_t tok = sample(last_logits[b], o, gen);
    if (is_stop(o, tok)) {
      done[bi] = true;
      out[bi].finish_reason = "stop_token";
      continue;
    }
    out[bi].tokens.push_back(tok);
    seq[bi].push_back(tok);
    next[b][0] = tok;
    if (o.stop && o.stop(bi, out[bi].tokens)) {
      done[bi] = true;
      out[bi].finish_reason = "stop";
      continue;
    }
    any = true;
  }
  return any;
}

// One decoding step through the KV cache: the next tokens' logits (B, V) on the CPU.
at::Tensor decode_cached(const Llama& model, const at::Tensor& next, LeftPadded& in, KvCache& cache) {
  const auto dev = model.device();
  const std::int64_t B = next.size(0);
  at::Tensor p = at::zeros({B, 1}, at::TensorOptions().dtype(at::kLong));
  for (std::int64_t b = 0; b < B; ++b) p[b][0] = in.next_pos[static_cast<std::size_t>(b)]++;
  const std::int64_t len = cache.length + 1;
  at::Tensor attention_mask = in.valid.slice(1, 0, len).view({B, 1, 1, len});
  at::Tensor h = model.forward_hidden(next.to(dev), p.to(dev), attention_mask, &cache);
  return model.lm_head(h.select(1, 0)).to(at::kFloat).cpu();
}

// The reference path: every sequence recomputed from scratch, one at a time.
at::Tensor decode_from_scratch(const Llama& model, const std::vector<std::vector<std::int64_t>>& seq) {
  const auto dev = model.device();
  auto lopts = at::TensorOptions().dtype(at::kLong);
  std::vector<at::Tensor> rows;
  for (const auto& s : seq) {
    const auto T = static_cast<std::int64_t>(s.size());
    at::Tensor in = at::tensor(s, lopts).view({1, T}).to(dev);
    at::Tensor pp = at::arange(T, lopts.device(dev)).view({1, T});
    rows.push_back(model.lm_head(model.forward_hidden(in, pp).select(1, T - 1)).to(at::kFloat).cpu());
  }
  return at::cat(rows, 0);
}

}  // namespace

std::vector<Generation> generate(const Llama& model, const std::vector<std::vector<std::int64_t>>& prompts,
                                 const GenerateOptions& o) {
  const auto B = static_cast<std::int64_t>(prompts.size());
  std::vector<Generation> out(prompts.size());
  if (B == 0) return out;
  const std::int64_t maxlen = longest_prompt(prompts);
  const std::int64_t capacity = maxlen + o.max_new_tokens;
  at::NoGradGuard ng;
  const auto dev = model.device();
  auto lopts = at::TensorOptions().dtype(at::kLong);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  LeftPadded in = left_pad(prompts, maxlen, capacity, dev);

  std::vector<bool> done(prompts.size(), false);
  std::vector<std::vector<std::int64_t>> seq(prompts.begin(), prompts.end());  // for the no-cache path
  KvCache cache;
  if (o.use_cache) cache = model.new_cache(B, capacity);
  at::Tensor last_logits = prefill(model, in, o, o.use_cache ? &cache : nullptr);  // (B, V)
  for (std::int64_t step = 0; step < o.max_new_tokens; ++step) {
    at::Tensor next = at::zeros({B, 1}, lopts);
    const bool any = sample_next(last_logits, o, gen, done, out, seq, next);
    if (!any || step + 1 == o.max_new_tokens) break;
    AutocastGuard autocast(dev, at::kBFloat16, o.bf16);
    last_logits = o.use_cache ? decode_cached(model, next, in, cache) : decode_from_scratch(model, seq);
  }
  for (auto& g : out)
    if (g.finish_reason.empty()) g.finish_reason = "length";
  return out;
}

}  // namespace sft::model
