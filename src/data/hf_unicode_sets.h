// Unicode character sets as `tokenizers` sees them, where the libraries sft uses see others.
//
// Regex: tokenizers compiles a tokenizer.json's Split regex with Oniguruma, whose Unicode
// tables are newer than Debian's PCRE2 (10.42: Unicode 14), and whose \s leaves out U+180E,
// which PCRE2's includes. So that a pattern matches the same code points whatever PCRE2 is
// installed, hf_regex.cpp writes \s, \p{L} and \p{N} as these explicit sets.
//
// NFC: tokenizers' NFC tables are older than utf8proc's (Unicode 15): the combining marks
// they lack are, to tokenizers, unassigned characters, which NFC leaves alone and which
// block reordering and composition across them. nfc_normalize() treats them so.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace sft::data::hf {

struct CodePointRange {
  std::uint32_t lo, hi;  // inclusive
};

// Sorted, disjoint, non-adjacent ranges (generated: hf_unicode_sets.cpp).
std::span<const CodePointRange> white_space_ranges();  // \s
std::span<const CodePointRange> letter_ranges();       // \p{L}
std::span<const CodePointRange> number_ranges();       // \p{N}
std::span<const CodePointRange> nfc_unknown_ranges();  // known to utf8proc's NFC, not tokenizers'

inline bool in_ranges(std::span<const CodePointRange> ranges, char32_t c) {
  std::size_t lo = 0, hi = ranges.size();  // binary search: the first range with hi >= c
  while (lo < hi) {
    std::size_t mid = (lo + hi) / 2;
    if (ranges[mid].hi < c)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < ranges.size() && ranges[lo].lo <= c;
}

}  // namespace sft::data::hf
