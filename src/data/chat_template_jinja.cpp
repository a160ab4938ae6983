// ChatTemplate's Jinja side: the chat template each built-in exports (written here for sft,
// rendered by transformers as sft renders: tests/clients/hf_chat_render.py), and
// template: auto, which recognises a folder's template by the fingerprint of its source.
#include <array>

#include "sft/data/chat_template.h"
#include "sft/util/error.h"
#include "sft/util/hash.h"

namespace sft::data {
namespace {

// A Jinja string literal holding `s` exactly (jinja2 unescapes literals as Python's
// unicode-escape does, after turning raw CR/CRLF into LF, so those are escaped too).
std::string literal(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7F) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// Splits off messages[0] when it is the system message: `system_message` is its content,
// else `fallback` (a literal, or "none"); `loop_messages` the rest.
std::string system_prologue(const std::string& fallback) {
  return "{%- if messages and messages[0]['role'] == 'system' %}\n"
         "    {%- set system_message = messages[0]['content'] %}\n"
         "    {%- set loop_messages = messages[1:] %}\n"
         "{%- else %}\n"
         "    {%- set system_message = " +
         fallback +
         " %}\n"
         "    {%- set loop_messages = messages %}\n"
         "{%- endif %}\n";
}

// Official templates that render as a built-in (tests/clients/hf_chat_render.py renders each
// with transformers on real conversations), by fingerprint(); the sources are not copied here.
struct Known {
  const char* sha256;
  config::Template kind;
  const char* what;
};
const std::array<Known, 5> kKnown = {{
    {"ba03a121d097859c7b5b9cd03af99aafe95275210d2876f642ad9929a150f122", config::Template::kLlama3,
     "Meta-Llama-3-8B/70B-Instruct"},
    {"93c0e9aa3629bbd77e68dbc0f5621f6e6b23aa8d74b932595cdb8d64684526d7", config::Template::kLlama31,
     "Llama-3.1-8B/70B-Instruct, Llama-3.3-70B-Instruct"},
    {"55b2f4a26ac9ee719330a61a0c39d9e538b0e9322212f048326318cff4f8674a", config::Template::kQwen25,
     "Qwen2.5-*-Instruct, Qwen2.5-Coder-*-Instruct"},
    {"87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5", config::Template::kQwen3,
     "Qwen3 (as first released)"},
    {"a55ee1b1660128b7098723e0abcd92caa0788061051c62d51cbe87d9cf1974d8", config::Template::kQwen3,
     "Qwen3-0.6B ... Qwen3-235B-A22B (current)"},
}};

// The Jinja of each built-in after its header line; `sys` is the system message as a literal,
// or "none".

// FastChat ADD_COLON_TWO: system + " ", "USER: q " / "ASSISTANT: a</s>"; an empty
// message is its bare "ROLE:".
std::string vicuna_v11_jinja(const std::string& sys) {
  return system_prologue(sys) +
         "{{- system_message + ' ' }}\n"
         "{%- for message in loop_messages %}\n"
         "    {%- set role = 'USER' if message['role'] == 'user' else 'ASSISTANT' %}\n"
         "    {%- if not message['content'] %}\n"
         "        {{- role + ':' }}\n"
         "    {%- elif message['role'] == 'user' %}\n"
         "        {{- role + ': ' + message['content'] + ' ' }}\n"
         "    {%- else %}\n"
         "        {{- role + ': ' + message['content'] + eos_token }}\n"
         "    {%- endif %}\n"
         "{%- endfor %}\n"
         "{%- if add_generation_prompt %}\n"
         "    {{- 'ASSISTANT:' }}\n"
         "{%- endif %}\n";
}

// FastChat LLAMA2: "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n" (or "[INST] "), the first
// question bare, later ones after "[INST] ", each followed by "[/INST]"; an answer is
// " a </s><s>"; an empty message renders "[INST]" (question) or nothing (answer).
std::string llama2_jinja(const std::string& sys) {
  return system_prologue(sys) +
         "{%- if system_message %}\n"
         "    {{- '[INST] <<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' }}\n"
         "{%- else %}\n"
         "    {{- '[INST] ' }}\n"
         "{%- endif %}\n"
         "{%- for message in loop_messages %}\n"
         "    {%- if message['role'] == 'user' %}\n"
         "        {%- if not message['content'] %}\n"
         "            {{- '[INST]' }}\n"
         "        {%- elif loop.first %}\n"
         "            {{- message['content'] + ' ' }}\n"
         "        {%- else %}\n"
         "            {{- '[INST] ' + message['content'] + ' ' }}\n"
         "        {%- endif %}\n"
         "        {{- '[/INST]' }}\n"
         "    {%- elif message['content'] %}\n"
         "        {{- ' ' + message['content'] + ' ' + eos_token + bos_token }}\n"
         "    {%- endif %}\n"
         "{%- endfor %}\n";
}

// FastChat CHATML: a system turn always; an empty message is its bare opening line.
std::string chatml_jinja(const std::string& sys) {
  return system_prologue(sys) +
         "{{- '<|im_start|>system\\n' + system_message + '<|im_end|>\\n' }}\n"
         "{%- for message in loop_messages %}\n"
         "    {{- '<|im_start|>' + message['role'] + '\\n' }}\n"
         "    {%- if message['content'] %}\n"
         "        {{- message['content'] + '<|im_end|>\\n' }}\n"
         "    {%- endif %}\n"
         "{%- endfor %}\n"
         "{%- if add_generation_prompt %}\n"
         "    {{- '<|im_start|>assistant\\n' }}\n"
         "{%- endif %}\n";
}

// Stanford Alpaca, instructions without input: the preamble (the system message, else
// the no-input one), then "### Instruction:" / "### Response:" blocks; answer + eos.
std::string alpaca_jinja(const std::string& preamble) {
  return system_prologue(preamble) +
         "{%- for message in loop_messages %}\n"
         "    {%- if message['role'] == 'user' %}\n"
         "        {{- (system_message if loop.first else '') + '\\n\\n### Instruction:\\n' + "
         "message['content'] + "
         "'\\n\\n### Response:\\n' }}\n"
         "    {%- else %}\n"
         "        {{- message['content'] + eos_token }}\n"
         "    {%- endif %}\n"
         "{%- endfor %}\n";
}

std::string raw_jinja() {
  return "{%- for message in messages %}\n"
         "    {%- if message['role'] == 'user' %}\n"
         "        {{- message['content'] + '\\n' }}\n"
         "    {%- elif message['role'] == 'assistant' %}\n"
         "        {{- message['content'] + eos_token }}\n"
         "    {%- endif %}\n"
         "{%- endfor %}\n";
}

// Llama 3 and 3.1 differ in the system turn only (3.1 always writes one, with its dates).
std::string llama3_jinja(const std::string& sys, bool llama31) {
  std::string j = system_prologue(sys) + "{{- '<|begin_of_text|>' }}\n";
  if (llama31)
    j += "{{- '<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: December 2023\\n"
         "Today Date: 26 Jul 2024\\n\\n' + (system_message if system_message is not none else '') | trim "
         "+ "
         "'<|eot_id|>' }}\n";
  else
    j += "{%- if system_message is not none %}\n"
         "    {{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + system_message | trim + "
         "'<|eot_id|>' }}\n"
         "{%- endif %}\n";
  j += "{%- for message in loop_messages %}\n"
       "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] "
       "| trim + "
       "'<|eot_id|>' }}\n"
       "{%- endfor %}\n"
       "{%- if add_generation_prompt %}\n"
       "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
       "{%- endif %}\n";
  return j;
}

std::string qwen25_jinja(const std::string& sys) {
  return system_prologue(sys) +
         "{{- '<|im_start|>system\\n' + system_message + '<|im_end|>\\n' }}\n"
         "{%- for message in loop_messages %}\n"
         "    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\n"
         "{%- endfor %}\n"
         "{%- if add_generation_prompt %}\n"
         "    {{- '<|im_start|>assistant\\n' }}\n"
         "{%- endif %}\n";
}

// Qwen3's rendering: thinking written in an answer is dropped before the last question
// and kept after it; the answer after the last question opens with a think block
// (empty without thinking). The generation prompt is enable_thinking=False's unless
// enable_thinking is passed true.
std::string qwen3_jinja(const std::string& sys) {
  return system_prologue(sys) +
         "{%- if system_message is not none %}\n"
         "    {{- '<|im_start|>system\\n' + system_message + '<|im_end|>\\n' }}\n"
         "{%- endif %}\n"
         "{%- set ns = namespace(found=false, last_query_index=loop_messages|length - 1) %}\n"
         "{%- for message in loop_messages[::-1] %}\n"
         "    {%- if not ns.found and message['role'] == 'user' and not (message['content'].startswith("
         "'<tool_response>') and message['content'].endswith('</tool_response>')) %}\n"
         "        {%- set ns.found = true %}\n"
         "        {%- set ns.last_query_index = loop_messages|length - 1 - loop.index0 %}\n"
         "    {%- endif %}\n"
         "{%- endfor %}\n"
         "{%- for message in loop_messages %}\n"
         "    {%- if message['role'] == 'user' %}\n"
         "        {{- '<|im_start|>user\\n' + message['content'] + '<|im_end|>\\n' }}\n"
         "    {%- else %}\n"
         "        {%- set content = message['content'] %}\n"
         "        {%- set reasoning = '' %}\n"
         "        {%- if '</think>' in content %}\n"
         "            {%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1]"
         ".lstrip('\\n') %}\n"
         "            {%- set content = content.split('</think>')[-1].lstrip('\\n') %}\n"
         "        {%- endif %}\n"
         "        {%- if loop.index0 > ns.last_query_index and (loop.last or reasoning) %}\n"
         "            {{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + "
         "'\\n</think>\\n\\n' + "
         "content.lstrip('\\n') }}\n"
         "        {%- else %}\n"
         "            {{- '<|im_start|>assistant\\n' + content }}\n"
         "        {%- endif %}\n"
         "        {{- '<|im_end|>\\n' }}\n"
         "    {%- endif %}\n"
         "{%- endfor %}\n"
         "{%- if add_generation_prompt %}\n"
         "    {{- '<|im_start|>assistant\\n' }}\n"
         "    {%- if not (enable_thinking is defined and enable_thinking) %}\n"
         "        {{- '<think>\\n\\n</think>\\n\\n' }}\n"
         "    {%- endif %}\n"
         "{%- endif %}\n";
}

}  // namespace

std::string ChatTemplate::jinja() const {
  using config::Template;
  const std::string sys = has_system_ ? literal(system_) : "none";
  std::string j = "{#- sft chat template \"" + name() + "\" (written by sft; renders as sft trains) -#}\n";
  switch (kind_) {
    case Template::kVicunaV11: return j + vicuna_v11_jinja(sys);
    case Template::kLlama2: return j + llama2_jinja(sys);
    case Template::kChatml: return j + chatml_jinja(sys);
    case Template::kAlpaca:
      // Alpaca's preamble: the system message, else the no-input one.
      return j + alpaca_jinja(has_system_ && !system_.empty()
                                  ? sys
                                  : literal("Below is an instruction that describes a task. Write a response "
                                            "that appropriately completes the request."));
    case Template::kRaw: return j + raw_jinja();
    case Template::kLlama3:
    case Template::kLlama31: return j + llama3_jinja(sys, kind_ == Template::kLlama31);
    case Template::kQwen25: return j + qwen25_jinja(sys);
    case Template::kQwen3: return j + qwen3_jinja(sys);
    case Template::kAuto: break;  // create() resolves auto
  }
  return j;
}

std::string ChatTemplate::fingerprint(std::string_view src) {
  std::string s;
  s.reserve(src.size());
  for (std::size_t i = 0; i < src.size(); ++i)
    if (!(src[i] == '\r' && i + 1 < src.size() && src[i + 1] == '\n')) s += src[i];
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return sha256_hex("");
  return sha256_hex(s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1));
}

config::Template ChatTemplate::detect(const Tokenizer& tok) {
  const std::string& src = tok.chat_template();
  if (src.empty())
    throw ConfigError(
        "template: auto: the tokenizer " + tok.path() +
        " has no chat template beside it (no "
        "tokenizer_config.json \"chat_template\" nor chat_template.jinja in its folder); name a "
        "template (" +
        config::choice_list<config::Template>() + ")");
  const std::string fp = fingerprint(src);
  for (const auto& k : kKnown)
    if (fp == k.sha256) return k.kind;
  std::string tried;
  for (const auto& c : config::Choices<config::Template>::all) {
    if (c.value == config::Template::kAuto) continue;
    if (fingerprint(create(c.value).jinja()) == fp) return c.value;
    tried += (tried.empty() ? "" : ", ") + std::string(c.name);
  }
  std::string official;
  for (const auto& k : kKnown)
    official += std::string(official.empty() ? "" : "; ") + config::name(k.kind) + ": " + k.what;
  throw ConfigError(
      tok.chat_template_path() + ": template: auto does not recognise this chat template (fingerprint " +
      fp.substr(0, 16) + "). Tried the built-ins " + tried +
      " (sft's own exports of each, with its default system message) and the official templates that "
      "render as one of them (" +
      official +
      "). sft has no Jinja interpreter: a template is recognised by its source, not rendered. If it "
      "renders as a built-in, name that one (template: NAME)");
}

}  // namespace sft::data
