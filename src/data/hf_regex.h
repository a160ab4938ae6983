// Split patterns of a tokenizer.json, matched as `tokenizers` matches them.
//
// tokenizers compiles a Split regex with Oniguruma (Ruby syntax) and walks it with onig's
// find_iter. sft uses PCRE2 instead (libpcre2-8, UTF + UCP, JIT-compiled when the build has
// JIT): a maintained Debian library with Unicode property classes, lookahead and a JIT far
// faster than an interpreter, rather than a hand-written matcher. The two engines agree on
// the Perl-style core these patterns use; where they part, translate_pattern() either writes
// the construct so that PCRE2 matches what onig matches (\s, \p{L}, \p{N} as explicit
// Unicode sets: hf_unicode_sets.h; \v; \uHHHH; {,n}) or refuses it (anchors, \w, \d, \b,
// backreferences, inline options other than (?i:...), classes inside (?i:...), ...).
//
// A compiled Regex is immutable and shared by threads; each thread matches with its own
// PCRE2 match data and JIT stack (thread_local).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sft::data::hf {

// A stretch of a subject: [begin, end) in bytes; is_match says whether the pattern matched it.
struct Span {
  std::size_t begin, end;
  bool is_match;
};

// The onig pattern as an equivalent PCRE2 pattern. Throws sft::ConfigError (no file or
// path: the caller adds them) naming the first construct it does not translate.
std::string translate_pattern(std::string_view onig_pattern);

class Regex {
 public:
  // An onig regex (translated, then compiled), or a literal string (tokenizers escapes it).
  // Throw sft::ConfigError as translate_pattern does, or with PCRE2's compile error.
  static std::unique_ptr<const Regex> compile(std::string_view onig_pattern);
  static std::unique_ptr<const Regex> literal(std::string_view text);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Replaces `out` with tokenizers' find_matches(subject): the matches of onig's find_iter
  // and the stretches between them, in order, covering the subject ([{0, 0, false}] when
  // it is empty). REQUIRES: subject is valid UTF-8. Throws sft::Error when PCRE2 gives up
  // (a match or JIT-stack limit on a pathological pattern).
  void find_matches(std::string_view subject, std::vector<Span>& out) const;

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8*, kept out of this header
  bool jit_ = false;
  std::string literal_;  // non-empty: a literal pattern, matched without PCRE2
};

// The UTF-8 encoding of code point `cp` appended to `out`.
void append_utf8(std::string& out, char32_t cp);
// The length of the valid UTF-8 sequence starting at s[i], or 0 when the bytes there are not
// one (Unicode's well-formed sequences: no overlongs, surrogates or values above U+10FFFF).
std::size_t utf8_sequence_length(std::string_view s, std::size_t i);

}  // namespace sft::data::hf
