// Text in, text out: prompts rendered with a chat template (or raw), generated in batches
// with the KV cache, cut at end tokens and at the template's stop strings.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sft/data/chat_template.h"
#include "sft/data/record.h"
#include "sft/data/tokenizer.h"
#include "sft/model/generate.h"
#include "sft/model/llama.h"

namespace sft::eval {

struct TextRequest {
  std::vector<std::int32_t> prompt_ids;
};

struct TextResult {
  std::string text;
  std::int64_t prompt_tokens = 0, new_tokens = 0;
  std::string finish_reason;  // stop_token | stop | length
};

struct TextOptions {
  model::GenerateOptions gen;             // stop_ids and stop are filled in from the tokenizer
  std::vector<std::string> stop_strings;  // generation ends at the first occurrence (not included)
  std::int64_t batch_size = 8;
};

// Prompt ids of user turn `turn` of a record with a template (BOS included when the
// tokenizer has one): exactly the prefix training used.
std::vector<std::int32_t> chat_prompt(const data::ChatTemplate& tmpl, const data::Tokenizer& tok,
                                      const data::Record& r, std::size_t turn);
// A raw text prompt: BOS + text.
std::vector<std::int32_t> raw_prompt(const data::Tokenizer& tok, const std::string& text, bool bos = true);

std::vector<TextResult> generate_text(const model::Llama& model, const data::Tokenizer& tok,
                                      const std::vector<TextRequest>& requests, const TextOptions& opts);

// Cuts `text` at the first of `stops`; returns true when one was found.
bool cut_at_stop(std::string& text, const std::vector<std::string>& stops);

}  // namespace sft::eval
