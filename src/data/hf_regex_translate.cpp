// translate_pattern(): a tokenizer.json's Split regex (Oniguruma, Ruby syntax) rewritten as
// a PCRE2 pattern that matches the same strings, or refused (hf_regex.h).
#include <algorithm>
#include <cstdio>
#include <span>
#include <vector>

#include "data/hf_regex.h"
#include "data/hf_unicode_sets.h"
#include "sft/util/error.h"

namespace sft::data::hf {
namespace {

[[noreturn]] void refuse(std::size_t pos, const std::string& what) {
  throw ConfigError("regex offset " + std::to_string(pos) + ": " + what);
}

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alnum(char32_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

std::string hex_escape(char32_t cp) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "\\x{%X}", static_cast<unsigned>(cp));
  return buf;
}

// The complement of sorted disjoint ranges within the Unicode scalar values (surrogates are
// never in a subject: they stay out of the ranges PCRE2 sees).
std::vector<CodePointRange> complement(std::span<const CodePointRange> ranges) {
  std::vector<CodePointRange> out;
  std::uint32_t next = 0;
  auto add = [&](std::uint32_t lo, std::uint32_t hi) {
    if (lo <= 0xD7FF) out.push_back({lo, std::min<std::uint32_t>(hi, 0xD7FF)});
    if (hi >= 0xE000) out.push_back({std::max<std::uint32_t>(lo, 0xE000), hi});
  };
  for (const auto& r : ranges) {
    if (r.lo > next) add(next, r.lo - 1);
    next = r.hi + 1;
  }
  if (next <= 0x10FFFF) add(next, 0x10FFFF);
  return out;
}

std::string class_body(std::span<const CodePointRange> ranges) {
  std::string out;
  for (const auto& r : ranges) {
    out += hex_escape(r.lo);
    if (r.hi != r.lo) out += "-" + hex_escape(r.hi);
  }
  return out;
}

// One left-to-right pass over the onig pattern, writing the PCRE2 pattern.
class Translator {
 public:
  explicit Translator(std::string_view p) : p_(p) {}

  std::string run() {
    while (i_ < p_.size()) atom_or_operator();
    if (!groups_.empty()) refuse(p_.size(), "a group is not closed");
    return out_;
  }

 private:
  struct Group {
    bool caseless, lookaround;
  };
  enum class Item { kNone, kChar, kSet };  // what an escape or class member turned out to be

  bool caseless() const { return !groups_.empty() && groups_.back().caseless; }

  char32_t next_char() {  // a literal character of the pattern (UTF-8), consumed
    std::size_t n = utf8_sequence_length(p_, i_);
    if (n == 0) refuse(i_, "the pattern is not valid UTF-8");
    char32_t cp = static_cast<unsigned char>(p_[i_]);
    if (n > 1) {
      cp &= 0xFF >> (n + 1);
      for (std::size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(p_[i_ + k]) & 0x3F);
    }
    i_ += n;
    return cp;
  }

  void literal(char32_t cp, std::size_t at) {
    if (caseless() && cp >= 0x80)
      refuse(at, "a non-ASCII character inside (?i:...) (case folding may differ)");
    out_ += is_alnum(cp) ? std::string(1, static_cast<char>(cp)) : hex_escape(cp);
    atom_ = true;
  }

  void atom_or_operator() {
    std::size_t at = i_;
    char c = p_[i_];
    switch (c) {
      case '\\': {
        ++i_;
        char32_t cp = 0;
        std::string set;
        if (escape(/*in_class=*/false, cp, set) == Item::kSet) {
          out_ += set;
          atom_ = true;
        } else {
          literal(cp, at);
        }
        return;
      }
      case '[': char_class(); return;
      case '(': group_open(); return;
      case ')':
        if (groups_.empty()) refuse(at, "')' without a matching '('");
        atom_ = !groups_.back().lookaround;  // a quantified lookaround: engines differ
        groups_.pop_back();
        out_ += ')';
        ++i_;
        return;
      case '|':
        out_ += '|';
        atom_ = false;
        ++i_;
        return;
      case '.':
        out_ += '.';  // both: any character but \n (PCRE2 is compiled with NEWLINE_LF)
        atom_ = true;
        ++i_;
        return;
      case '^':
      case '$':
        refuse(at,
               std::string("anchor '") + c + "' is not supported (Ruby's line anchors differ from PCRE2's)");
      case '*':
      case '+':
      case '?': quantifier_tail(at, std::string(1, c)); return;
      case '{': interval(at); return;
      default: literal(next_char(), at);
    }
  }

  void quantifier_tail(std::size_t at, const std::string& q) {
    if (!atom_) refuse(at, "a quantifier must follow a character, class or group");
    out_ += q;
    ++i_;
    if (i_ < p_.size() && (p_[i_] == '?' || p_[i_] == '+')) out_ += p_[i_++];  // lazy, possessive
    atom_ = false;
  }

  void interval(std::size_t at) {
    std::size_t j = i_ + 1;
    std::string lo, hi;
    while (j < p_.size() && is_digit(p_[j])) lo += p_[j++];
    bool comma = j < p_.size() && p_[j] == ',';
    if (comma) {
      ++j;
      while (j < p_.size() && is_digit(p_[j])) hi += p_[j++];
    }
    if (j >= p_.size() || p_[j] != '}' || (lo.empty() && hi.empty()) || lo.size() > 5 || hi.size() > 5)
      refuse(at, "'{' that is not an interval {n}, {n,}, {n,m} or {,m} (escape a literal '{')");
    if (!atom_) refuse(at, "an interval must follow a character, class or group");
    out_ += "{" + (lo.empty() ? std::string("0") : lo) + (comma ? "," + hi : "") + "}";
    i_ = j + 1;
    // A ranged interval may be lazy; onig reads '+' after an interval, and '?' after {n}, as
    // another repeat (Ruby syntax), where PCRE2 reads possessive and lazy.
    if (i_ < p_.size() && p_[i_] == '?' && comma) {
      out_ += '?';
      ++i_;
    } else if (i_ < p_.size() && (p_[i_] == '?' || p_[i_] == '+')) {
      refuse(i_, std::string("'") + p_[i_] + "' after an interval (onig and PCRE2 read it differently)");
    }
    atom_ = false;
  }

  void group_open() {
    std::size_t at = i_;
    std::string_view rest = p_.substr(i_);
    bool inherit = caseless();
    auto open = [&](std::string_view token, bool caseless_group, bool lookaround) {
      out_ += token;
      i_ += token.size();
      groups_.push_back({caseless_group, lookaround});
      atom_ = false;
    };
    if (rest.starts_with("(?:")) return open("(?:", inherit, false);
    if (rest.starts_with("(?>")) return open("(?>", inherit, false);
    if (rest.starts_with("(?i:")) return open("(?i:", true, false);
    for (std::string_view look : {"(?=", "(?!", "(?<=", "(?<!"})
      if (rest.starts_with(look)) return open(look, inherit, true);
    if (rest.starts_with("(?"))
      refuse(at, "group kind or inline option '(?" + std::string(rest.substr(2, 1)) +
                     "' is not supported (only (?:, (?>, (?i:, (?=, (?!, (?<=, (?<!)");
    open("(", inherit, false);
  }

  // After a backslash. A character escape sets `cp`; a set escape writes, into `set`, a
  // class ("[...]") outside a class or class members inside one.
  Item escape(bool in_class, char32_t& cp, std::string& set) {
    std::size_t at = i_ - 1;
    if (i_ >= p_.size()) refuse(at, "the pattern ends with a backslash");
    char c = p_[i_];
    auto set_of = [&](std::span<const CodePointRange> ranges, bool negated) {
      if (caseless()) refuse(at, "a character class inside (?i:...) (case folding of classes may differ)");
      if (in_class) {
        set = negated ? class_body(complement(ranges)) : class_body(ranges);
      } else {
        set = (negated ? "[^" : "[") + class_body(ranges) + "]";
      }
      return Item::kSet;
    };
    switch (c) {
      case 's':
      case 'S': ++i_; return set_of(white_space_ranges(), c == 'S');
      case 'p':
      case 'P': {
        std::size_t close = p_.find('}', i_);
        std::string_view name = (i_ + 1 < p_.size() && p_[i_ + 1] == '{' && close != std::string_view::npos)
                                    ? p_.substr(i_ + 2, close - i_ - 2)
                                    : std::string_view();
        if (name != "L" && name != "N")
          refuse(at, "only \\p{L}, \\p{N}, \\P{L} and \\P{N} are supported among Unicode properties");
        i_ = close + 1;
        return set_of(name == "L" ? letter_ranges() : number_ranges(), c == 'P');
      }
      case 'n': cp = '\n'; break;
      case 'r': cp = '\r'; break;
      case 't': cp = '\t'; break;
      case 'f': cp = '\f'; break;
      case 'v': cp = 0x0B; break;  // onig: vertical tab; PCRE2: any vertical whitespace
      case 'a': cp = 0x07; break;
      case 'e': cp = 0x1B; break;
      case 'x': {
        ++i_;
        std::string digits;
        if (i_ < p_.size() && p_[i_] == '{') {
          std::size_t j = i_ + 1;
          while (j < p_.size() && is_hex(p_[j]) && digits.size() < 7) digits += p_[j++];
          if (j >= p_.size() || p_[j] != '}' || digits.empty()) refuse(at, "malformed \\x{...}");
          i_ = j + 1;
        } else {
          while (i_ < p_.size() && is_hex(p_[i_]) && digits.size() < 2) digits += p_[i_++];
          if (digits.empty()) refuse(at, "malformed \\x");
          if (std::stoul(digits, nullptr, 16) >= 0x80)
            refuse(at, "\\xHH above 7F is a raw byte to onig, not a character; write \\x{...}");
        }
        unsigned long v = std::stoul(digits, nullptr, 16);
        if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
          refuse(at, "\\x{" + digits + "} is not a Unicode scalar value");
        cp = static_cast<char32_t>(v);
        return Item::kChar;
      }
      case 'u': {
        std::string_view d = p_.substr(i_ + 1, 4);
        if (d.size() != 4 || !std::all_of(d.begin(), d.end(), is_hex)) refuse(at, "malformed \\uHHHH");
        unsigned long v = std::stoul(std::string(d), nullptr, 16);
        if (v >= 0xD800 && v <= 0xDFFF) refuse(at, "\\u" + std::string(d) + " is a surrogate");
        cp = static_cast<char32_t>(v);
        i_ += 5;
        return Item::kChar;
      }
      default: {
        auto u = static_cast<unsigned char>(c);
        if (u >= 0x80) {  // an escaped non-ASCII character is itself
          cp = next_char();
          return Item::kChar;
        }
        if (is_alnum(u))
          refuse(at, std::string("escape \\") + c +
                         " is not supported (\\s, \\S, \\p{L}, \\p{N}, \\P{..}, \\n, \\r, \\t, "
                         "\\f, \\v, \\a, \\e, \\x, \\u and escaped punctuation are)");
        cp = u;  // escaped punctuation, space or control: the character itself
      }
    }
    ++i_;
    return Item::kChar;
  }

  void char_class() {
    std::size_t at = i_;
    if (caseless()) refuse(at, "a character class inside (?i:...) (case folding of classes may differ)");
    ++i_;
    std::string body;
    bool negated = i_ < p_.size() && p_[i_] == '^';
    if (negated) ++i_;
    if (i_ < p_.size() && p_[i_] == ']') refuse(i_, "']' first in a class (escape it)");
    bool have_char = false;  // the last member was a single character (a range may start)
    bool members = false;
    for (;;) {
      if (i_ >= p_.size()) refuse(at, "a class '[' is not closed");
      char c = p_[i_];
      if (c == ']') break;
      if (c == '[') refuse(i_, "a nested class or POSIX bracket inside a class is not supported");
      if (c == '&' && i_ + 1 < p_.size() && p_[i_ + 1] == '&')
        refuse(i_, "class intersection '&&' is not supported");
      if (c == '-' && have_char && i_ + 1 < p_.size() && p_[i_ + 1] != ']') {
        ++i_;
        char32_t hi = 0;
        if (member(hi, body, /*range_end=*/true) != Item::kChar)
          refuse(i_, "a class range must end with a character");
        body += "-" + hex_escape(hi);
        have_char = false;
        continue;
      }
      char32_t cp = 0;
      Item item = member(cp, body, /*range_end=*/false);
      have_char = item == Item::kChar;
      members = true;
    }
    if (!members) refuse(at, "an empty class");
    ++i_;
    out_ += (negated ? "[^" : "[") + body + "]";
    atom_ = true;
  }

  // One member of a class: a character (written to `body` unless it ends a range) or a set.
  Item member(char32_t& cp, std::string& body, bool range_end) {
    if (p_[i_] == '\\') {
      ++i_;
      std::string set;
      Item item = escape(/*in_class=*/true, cp, set);
      if (item == Item::kSet) {
        if (range_end) return Item::kSet;
        body += set;
        return item;
      }
    } else {
      cp = next_char();
    }
    if (!range_end) body += hex_escape(cp);
    return Item::kChar;
  }

  std::string_view p_;
  std::size_t i_ = 0;
  std::string out_;
  std::vector<Group> groups_;
  bool atom_ = false;  // a quantifier may follow
};

}  // namespace

std::string translate_pattern(std::string_view onig_pattern) {
  if (onig_pattern.empty())
    throw ConfigError("an empty regex matches nothing but empty strings; not supported");
  return Translator(onig_pattern).run();
}

}  // namespace sft::data::hf
