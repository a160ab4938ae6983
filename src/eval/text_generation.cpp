#include "sft/eval/text_generation.h"

#include <algorithm>

namespace sft::eval {

std::vector<std::int32_t> chat_prompt(const data::ChatTemplate& tmpl, const data::Tokenizer& tok,
                                      const data::Record& r, std::size_t turn) {
  return data::ChatTemplate::encode(tmpl.generation_segments(r, turn), tok).ids;
}

std::vector<std::int32_t> raw_prompt(const data::Tokenizer& tok, const std::string& text, bool bos) {
  std::vector<std::int32_t> ids;
  if (bos && tok.bos_id() >= 0) ids.push_back(tok.bos_id());
  auto t = tok.encode(text);
  ids.insert(ids.end(), t.begin(), t.end());
  return ids;
}

bool cut_at_stop(std::string& text, const std::vector<std::string>& stops) {
  std::size_t best = std::string::npos;
  for (const auto& s : stops) {
    if (s.empty()) continue;
    auto p = text.find(s);
    if (p != std::string::npos && p < best) best = p;
  }
  if (best == std::string::npos) return false;
  text.resize(best);
  return true;
}

std::vector<TextResult> generate_text(const model::Llama& model, const data::Tokenizer& tok,
                                      const std::vector<TextRequest>& requests, const TextOptions& opts) {
  std::vector<TextResult> out(requests.size());
  model::GenerateOptions g = opts.gen;
  // Every EOS id the tokenizer names (LLaMA 3 Instruct's <|eot_id|> and <|end_of_text|>).
  for (const std::int32_t eos : tok.eos_ids())
    if (std::find(g.stop_ids.begin(), g.stop_ids.end(), eos) == g.stop_ids.end()) g.stop_ids.push_back(eos);
  for (const auto& s : opts.stop_strings)
    if (auto id = tok.piece_id(s);
        id && std::find(g.stop_ids.begin(), g.stop_ids.end(), *id) == g.stop_ids.end())
      g.stop_ids.push_back(*id);  // a stop string that is a single piece (<|im_end|>) is an end token
  const std::size_t bs = static_cast<std::size_t>(std::max<std::int64_t>(1, opts.batch_size));
  for (std::size_t start = 0; start < requests.size(); start += bs) {
    const std::size_t end = std::min(requests.size(), start + bs);
    std::vector<std::vector<std::int64_t>> prompts;
    for (std::size_t i = start; i < end; ++i)
      prompts.emplace_back(requests[i].prompt_ids.begin(), requests[i].prompt_ids.end());
    model::GenerateOptions gb = g;
    if (!opts.stop_strings.empty()) {
      gb.stop = [&](std::size_t, const std::vector<std::int64_t>& toks) {
        // Only the tail can complete a stop string: decode a bounded window.
        std::size_t from = toks.size() > 48 ? toks.size() - 48 : 0;
        std::string tail = tok.decode(
            std::vector<std::int32_t>(toks.begin() + static_cast<std::ptrdiff_t>(from), toks.end()));
        for (const auto& s : opts.stop_strings)
          if (!s.empty() && tail.find(s) != std::string::npos) return true;
        return false;
      };
    }
    auto gens = model::generate(model, prompts, gb);
    for (std::size_t i = start; i < end; ++i) {
      const auto& gi = gens[i - start];
      TextResult& r = out[i];
      r.text = tok.decode(std::vector<std::int32_t>(gi.tokens.begin(), gi.tokens.end()));
      r.prompt_tokens = static_cast<std::int64_t>(requests[i].prompt_ids.size());
      r.new_tokens = static_cast<std::int64_t>(gi.tokens.size());
      r.finish_reason = gi.finish_reason;
      if (cut_at_stop(r.text, opts.stop_strings)) r.finish_reason = "stop";
    }
  }
  return out;
}

}  // namespace sft::eval
