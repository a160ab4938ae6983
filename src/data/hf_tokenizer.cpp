// HfTokenizer's encode and decode pipeline, in tokenizers' order: added tokens, normalizer,
// pre-tokenizer (Split steps, then ByteLevel), BPE, post-processor; decode through the
// ByteLevel decoder. The loading and validation of tokenizer.json: hf_tokenizer_load.cpp.
#include "sft/data/hf_tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>

#include "data/hf_tokenizer_impl.h"
#include "data/hf_unicode_sets.h"
#include "sft/util/error.h"

namespace sft::data {

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace hf {

void AddedMatcher::add(std::string_view content, std::int32_t token) {
  std::int32_t node = 0;
  for (char ch : content) {
    auto b = static_cast<unsigned char>(ch);
    std::int32_t c = child(node, b);
    if (c < 0) {
      c = static_cast<std::int32_t>(nodes_.size());
      auto& next = nodes_[node].next;
      next.insert(std::lower_bound(next.begin(), next.end(), std::make_pair(b, std::int32_t{0})), {b, c});
      nodes_.emplace_back();
    }
    node = c;
  }
  if (nodes_[node].token < 0) nodes_[node].token = token;
  first_byte_[static_cast<unsigned char>(content[0])] = true;
}

std::int32_t AddedMatcher::child(std::int32_t node, unsigned char b) const {
  const auto& next = nodes_[node].next;
  auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(b, std::int32_t{0}));
  return it != next.end() && it->first == b ? it->second : -1;
}

std::optional<AddedMatcher::Match> AddedMatcher::find(std::string_view text, std::size_t from) const {
  for (std::size_t s = from; s < text.size(); ++s) {
    if (!first_byte_[static_cast<unsigned char>(text[s])]) continue;
    std::int32_t node = 0, token = -1;
    std::size_t end = 0;
    for (std::size_t i = s; i < text.size(); ++i) {
      node = child(node, static_cast<unsigned char>(text[i]));
      if (node < 0) break;
      if (nodes_[node].token >= 0) token = nodes_[node].token, end = i + 1;
    }
    if (token >= 0) return Match{s, end, token};
  }
  return std::nullopt;
}

namespace {

std::string utf8proc_nfc(std::string_view s) {
  if (s.empty()) return {};
  utf8proc_uint8_t* dst = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                    static_cast<utf8proc_ssize_t>(s.size()), &dst,
                                    static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) throw Error(std::string("NFC normalization failed: ") + utf8proc_errmsg(n));
  std::string out(reinterpret_cast<const char*>(dst), static_cast<std::size_t>(n));
  std::free(dst);
  return out;
}

}  // namespace

std::string nfc_normalize(std::string_view s) {
  // Characters tokenizers' NFC does not know stay as they are and split the text into
  // stretches that normalize independently (hf_unicode_sets.h).
  std::string out;
  std::size_t stretch = 0;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = utf8_sequence_length(s, i);
    if (n >= 2) {
      char32_t cp = static_cast<unsigned char>(s[i]) & (0xFF >> (n + 1));
      for (std::size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
      if (in_ranges(nfc_unknown_ranges(), cp)) {
        out += utf8proc_nfc(s.substr(stretch, i - stretch));
        out += s.substr(i, n);
        stretch = i + n;
      }
    }
    i += n;
  }
  if (stretch == 0) return utf8proc_nfc(s);
  out += utf8proc_nfc(s.substr(stretch));
  return out;
}

}  // namespace hf

namespace {

using hf::Span;

bool is_white_space(char32_t c) { return hf::in_ranges(hf::white_space_ranges(), c); }

char32_t decode_at(std::string_view s, std::size_t i, std::size_t n) {
  char32_t cp = static_cast<unsigned char>(s[i]);
  if (n > 1) {
    cp &= 0xFF >> (n + 1);
    for (std::size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  }
  return cp;
}

// Where the whitespace that ends `s` begins (tokenizers: regex \s*$), for lstrip.
std::size_t trailing_space_start(std::string_view s) {
  std::size_t i = s.size();
  while (i > 0) {
    std::size_t j = i - 1;
    while (j > 0 && (static_cast<unsigned char>(s[j]) & 0xC0) == 0x80) --j;
    if (!is_white_space(decode_at(s, j, i - j))) break;
    i = j;
  }
  return i;
}

// How many bytes of whitespace begin `s` (tokenizers: regex ^\s*), for rstrip.
std::size_t leading_space_bytes(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t n = hf::utf8_sequence_length(s, i);
    if (!is_white_space(decode_at(s, i, n))) break;
    i += n;
  }
  return i;
}

struct Piece {
  std::size_t begin, end;
  std::int32_t added;  // index into Impl::added, or -1 for text
};

// tokenizers' AddedVocabulary::find_matches: the added tokens found in `text` (widened by
// lstrip / rstrip whitespace) and the stretches between them. The load refuses rstrip next
// to tokens that begin with whitespace, so pieces never overlap.
void split_added(const hf::AddedMatcher& matcher, const std::vector<hf::AddedToken>& added,
                 std::string_view text, std::vector<Piece>& out) {
  out.clear();
  std::size_t start_offset = 0, from = 0;
  while (auto m = matcher.find(text, from)) {
    from = m->end;
    std::size_t start = m->begin, stop = m->end;
    const hf::AddedToken& token = added[m->token];
    if (token.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), start_offset);
    if (token.rstrip) stop += leading_space_bytes(text.substr(stop));
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, m->token});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
}

bool is_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (std::size_t i = 0; i < bytes.size();) {
    if (std::size_t n = hf::utf8_sequence_length(bytes, i)) {
      out.append(bytes.substr(i, n));
      i += n;
      continue;
    }
    // The longest prefix of a well-formed sequence starting here, at least one byte.
    std::size_t k = 1;
    for (; i + k < bytes.size() && k < 4; ++k) {
      std::string probe(bytes.substr(i, k + 1));
      probe.append(4 - k - 1, '\x80');  // complete it with continuation bytes to test the prefix
      if (hf::utf8_sequence_length(probe, 0) == 0) break;
    }
    out += "\xEF\xBF\xBD";
    i += k;
  }
  return out;
}

}  // namespace

void HfTokenizer::Impl::encode(std::string_view text, std::vector<std::int32_t>& out) const {
  for (std::size_t i = 0; i < text.size();) {
    std::size_t n = hf::utf8_sequence_length(text, i);
    if (n == 0)
      throw DataError("text is not valid UTF-8 at byte " + std::to_string(i) + " (of " +
                      std::to_string(text.size()) + "); " + path + " encodes Unicode text only");
    i += n;
  }
  if (raw_matcher.empty()) return encode_normalized(text, out);
  std::vector<Piece> pieces;
  split_added(raw_matcher, added, text, pieces);
  for (const Piece& p : pieces) {
    if (p.added >= 0) {
      out.push_back(added[p.added].id);
    } else if (p.end > p.begin) {
      encode_normalized(text.substr(p.begin, p.end - p.begin), out);
    }
  }
}

void HfTokenizer::Impl::encode_normalized(std::string_view piece, std::vector<std::int32_t>& out) const {
  if (piece.empty()) return;  // tokenizers drops empty pieces before pre-tokenizing
  std::string normalized;
  if (nfc && !is_ascii(piece)) {
    normalized = hf::nfc_normalize(piece);
    piece = normalized;
  }
  if (normalized_matcher.empty()) return pre_tokenize(piece, out);
  std::vector<Piece> pieces;
  split_added(normalized_matcher, added, piece, pieces);
  for (const Piece& p : pieces) {
    if (p.added >= 0) {
      out.push_back(added[p.added].id);
    } else if (p.end > p.begin) {
      pre_tokenize(piece.substr(p.begin, p.end - p.begin), out);
    }
  }
}

void HfTokenizer::Impl::pre_tokenize(std::string_view piece, std::vector<std::int32_t>& out) const {
  std::vector<std::string_view> current{piece}, next;
  std::vector<Span> spans;
  for (const hf::SplitStep& step : splits) {
    next.clear();
    for (std::string_view p : current) {
      step.pattern->find_matches(p, spans);
      if (step.invert)
        for (Span& s : spans) s.is_match = !s.is_match;
      // tokenizers' NormalizedString::split: the spans each behavior keeps or joins.
      std::vector<Span> kept;
      switch (step.behavior) {
        case hf::SplitBehavior::kIsolated: kept = spans; break;
        case hf::SplitBehavior::kRemoved:
          for (const Span& s : spans)
            if (!s.is_match) kept.push_back(s);
          break;
        case hf::SplitBehavior::kContiguous: {
          bool previous = false;
          for (const Span& s : spans) {
            if (s.is_match == previous && !kept.empty()) {
              kept.back().end = s.end;
            } else {
              kept.push_back(s);
            }
            previous = s.is_match;
          }
          break;
        }
        case hf::SplitBehavior::kMergedWithPrevious: {
          bool previous = false;
          for (const Span& s : spans) {
            if (s.is_match && !previous && !kept.empty()) {
              kept.back().end = s.end;
            } else {
              kept.push_back(s);
            }
            previous = s.is_match;
          }
          break;
        }
        case hf::SplitBehavior::kMergedWithNext: {
          bool previous = false;
          for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
            if (it->is_match && !previous && !kept.empty()) {
              kept.back().begin = it->begin;
            } else {
              kept.push_back(*it);
            }
            previous = it->is_match;
          }
          std::reverse(kept.begin(), kept.end());
          break;
        }
      }
      for (const Span& s : kept)
        if (s.end > s.begin) next.push_back(p.substr(s.begin, s.end - s.begin));
    }
    current.swap(next);
  }
  for (std::string_view p : current) byte_level(p, out);
}

void HfTokenizer::Impl::byte_level(std::string_view piece, std::vector<std::int32_t>& out) const {
  std::string prefixed;
  if (add_prefix_space && piece.front() != ' ') {
    prefixed.reserve(piece.size() + 1);
    prefixed += ' ';
    prefixed += piece;
    piece = prefixed;
  }
  if (!byte_level_regex) return bpe.encode_word(piece, out);
  thread_local std::vector<Span> spans;  // no call below re-enters byte_level
  byte_level_regex->find_matches(piece, spans);
  for (const Span& s : spans)
    if (s.end > s.begin) bpe.encode_word(piece.substr(s.begin, s.end - s.begin), out);
}

// ---- public ---------------------------------------------------------------------------

HfTokenizer::HfTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HfTokenizer::~HfTokenizer() = default;

std::shared_ptr<const HfTokenizer> HfTokenizer::load(const std::string& path) {
  return std::shared_ptr<const HfTokenizer>(new HfTokenizer(Impl::load(path)));
}

std::vector<std::int32_t> HfTokenizer::encode(std::string_view text) const {
  std::vector<std::int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  impl_->encode(text, ids);
  return ids;
}

std::vector<std::int32_t> HfTokenizer::encode_with_special(std::string_view text) const {
  std::vector<std::int32_t> ids = impl_->prefix_ids;
  impl_->encode(text, ids);
  ids.insert(ids.end(), impl_->suffix_ids.begin(), impl_->suffix_ids.end());
  return ids;
}

std::string HfTokenizer::decode(const std::vector<std::int32_t>& ids, bool skip_special) const {
  std::string bytes;
  for (std::int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || !impl_->id_present[id]) continue;  // tokenizers skips them too
    if (skip_special && impl_->id_special[id]) continue;
    bytes += impl_->id_bytes[id];
  }
  std::string text = utf8_lossy(bytes);
  for (int k = 1; k < impl_->byte_level_decoders; ++k)
    text = utf8_lossy(hf::token_bytes(text).value_or(text));
  return text;
}

std::optional<std::int32_t> HfTokenizer::token_id(std::string_view token) const {
  if (auto it = impl_->added_ids.find(token); it != impl_->added_ids.end()) return it->second;
  if (auto it = impl_->vocab.find(token); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

std::string HfTokenizer::token(std::int32_t id) const {
  return id >= 0 && id < vocab_size() ? impl_->id_token[id] : std::string();
}

std::string HfTokenizer::token_bytes(std::int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->id_present[id] ? impl_->id_bytes[id] : std::string();
}

std::int32_t HfTokenizer::vocab_size() const { return static_cast<std::int32_t>(impl_->id_token.size()); }

bool HfTokenizer::is_special(std::int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->id_special[id];
}

std::optional<std::int32_t> HfTokenizer::bos_id() const { return impl_->bos; }
const std::string& HfTokenizer::path() const { return impl_->path; }
const std::string& HfTokenizer::sha256() const { return impl_->sha256; }

}  // namespace sft::data
