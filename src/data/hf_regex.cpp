#include "data/hf_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "sft/util/error.h"

namespace sft::data::hf {
namespace {

// Per-thread PCRE2 matching state: match data and a JIT stack, shared by every Regex.
struct ThreadMatcher {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  ThreadMatcher() {
    data = pcre2_match_data_create(16, nullptr);
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (!data || !context) throw Error("PCRE2: out of memory creating match data");
    if (jit_stack) pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~ThreadMatcher() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

ThreadMatcher& thread_matcher() {
  thread_local ThreadMatcher m;
  return m;
}

}  // namespace

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  unsigned char c = b(0);
  if (c < 0x80) return 1;
  std::size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // the second byte's range (Unicode table 3-7)
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c == 0xE0)
    n = 3, lo = 0xA0;
  else if (c == 0xED)
    n = 3, hi = 0x9F;
  else if (c >= 0xE1 && c <= 0xEF)
    n = 3;
  else if (c == 0xF0)
    n = 4, lo = 0x90;
  else if (c == 0xF4)
    n = 4, hi = 0x8F;
  else if (c >= 0xF1 && c <= 0xF3)
    n = 4;
  else
    return 0;
  if (i + n > s.size() || b(1) < lo || b(1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if ((b(k) & 0xC0) != 0x80) return 0;
  return n;
}

std::unique_ptr<const Regex> Regex::compile(std::string_view onig_pattern) {
  std::string pcre = translate_pattern(onig_pattern);
  pcre2_compile_context* cc = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
  int err = 0;
  PCRE2_SIZE err_at = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pcre.data()), pcre.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &err_at, cc);
  pcre2_compile_context_free(cc);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw ConfigError("PCRE2 cannot compile the regex: " + std::string(reinterpret_cast<char*>(msg)));
  }
  std::unique_ptr<Regex> r(new Regex());
  r->code_ = code;
  r->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;  // no JIT in this build: interpret
  return r;
}

std::unique_ptr<const Regex> Regex::literal(std::string_view text) {
  if (text.empty()) throw ConfigError("an empty String pattern is not supported");
  std::unique_ptr<Regex> r(new Regex());
  r->literal_ = std::string(text);
  return r;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_matches(std::string_view subject, std::vector<Span>& out) const {
  out.clear();
  if (subject.empty()) {
    out.push_back({0, 0, false});
    return;
  }
  std::size_t prev = 0;
  auto emit = [&](std::size_t s, std::size_t e) {
    if (prev != s) out.push_back({prev, s, false});
    out.push_back({s, e, true});
    prev = e;
  };
  if (!literal_.empty()) {  // non-overlapping occurrences, left to right (never empty)
    for (std::size_t at = subject.find(literal_); at != std::string_view::npos;
         at = subject.find(literal_, at + literal_.size()))
      emit(at, at + literal_.size());
  } else {
    auto* code = static_cast<pcre2_code*>(code_);
    ThreadMatcher& m = thread_matcher();
    const auto* text = reinterpret_cast<PCRE2_SPTR>(subject.data());
    // onig's find_iter: search from the end of the last match; an empty match right where
    // the last match ended is skipped by searching again one character further on.
    std::size_t last_end = 0;
    bool have_last = false;
    std::size_t last_match_end = 0;
    while (last_end <= subject.size()) {
      int rc = jit_ ? pcre2_jit_match(code, text, subject.size(), last_end, 0, m.data, m.context)
                    : PCRE2_ERROR_JIT_STACKLIMIT;
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // interpret: heap frames, PCRE2's own limits
        rc = pcre2_match(code, text, subject.size(), last_end, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, m.data,
                         m.context);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        throw Error("PCRE2 gave up matching a pre-tokenizer regex on a text of " +
                    std::to_string(subject.size()) + " bytes: " + reinterpret_cast<char*>(msg));
      }
      PCRE2_SIZE* ov = pcre2_get_ovector_pointer(m.data);
      std::size_t s = ov[0], e = ov[1];
      if (s == e && have_last && last_match_end == e) {
        last_end += last_end < subject.size() ? utf8_sequence_length(subject, last_end) : 1;
        continue;
      }
      last_end = e;
      have_last = true;
      last_match_end = e;
      emit(s, e);
    }
  }
  if (prev != subject.size()) out.push_back({prev, subject.size(), false});
}

}  // namespace sft::data::hf
