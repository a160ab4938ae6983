#include "data/hf_bpe.h"

#include <array>
#include <atomic>
#include <queue>

#include "data/hf_regex.h"
#include "sft/util/hash.h"

namespace sft::data::hf {
namespace {

constexpr std::uint64_t kEmpty = ~0ULL;
// Words up to this many bytes are cached; a cache that reaches kCacheWords entries starts over.
constexpr std::size_t kCacheWordBytes = 256;
constexpr std::size_t kCacheWords = 1 << 15;
// Up to this many symbols, a word merges by rescanning its pairs (fastest for short words);
// beyond, with a priority queue (tokenizers' algorithm; O(n log n) on hostile long words).
constexpr std::size_t kShortWord = 48;

struct Alphabet {
  std::array<char32_t, 256> to_char{};
  std::array<int, 256 + 68> to_byte{};  // indexed by character (all are below 324)
  Alphabet() {
    to_byte.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t c = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
      to_char[b] = c;
      to_byte[c] = b;
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet a;
  return a;
}

std::atomic<std::uint64_t> next_serial{1};

struct WordCache {
  std::uint64_t owner = 0;
  std::unordered_map<std::string, std::vector<std::int32_t>, TransparentHash, std::equal_to<>> words;
};

// A thread's caches: a few models at once (a thread rarely encodes with more than one).
WordCache& thread_cache(std::uint64_t owner) {
  thread_local std::array<WordCache, 4> caches;
  thread_local std::size_t victim = 0;
  for (auto& c : caches)
    if (c.owner == owner) return c;
  WordCache& c = caches[victim++ % caches.size()];
  c.owner = owner;
  c.words.clear();
  return c;
}

}  // namespace

char32_t byte_to_char(std::uint8_t b) { return alphabet().to_char[b]; }

int char_to_byte(char32_t c) { return c < alphabet().to_byte.size() ? alphabet().to_byte[c] : -1; }

std::optional<std::string> token_bytes(std::string_view token) {
  std::string out;
  for (std::size_t i = 0; i < token.size();) {
    std::size_t n = utf8_sequence_length(token, i);
    if (n == 0) return std::nullopt;
    char32_t cp = static_cast<unsigned char>(token[i]);
    if (n > 1) {
      cp &= 0xFF >> (n + 1);
      for (std::size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(token[i + k]) & 0x3F);
    }
    int b = char_to_byte(cp);
    if (b < 0) return std::nullopt;
    out += static_cast<char>(b);
    i += n;
  }
  return out;
}

Bpe::Bpe() : serial_(next_serial.fetch_add(1)) {
  for (auto& id : byte_id_) id = -1;
  merge_keys_.assign(1024, kEmpty);
  merge_values_.resize(1024);
}

void Bpe::set_vocab(const StringIdMap& vocab, bool ignore_merges, std::optional<std::int32_t> unk_id,
                    bool fuse_unk) {
  ignore_merges_ = ignore_merges;
  unk_id_ = unk_id;
  fuse_unk_ = fuse_unk;
  for (int b = 0; b < 256; ++b) {
    std::string c;
    append_utf8(c, byte_to_char(static_cast<std::uint8_t>(b)));
    if (auto it = vocab.find(c); it != vocab.end()) byte_id_[b] = it->second;
  }
  whole_words_.clear();
  if (ignore_merges)
    for (const auto& [token, id] : vocab)
      if (auto bytes = token_bytes(token)) whole_words_.emplace(std::move(*bytes), id);
}

const Bpe::Merge* Bpe::find_merge(std::int32_t left, std::int32_t right) const {
  std::uint64_t key = (static_cast<std::uint64_t>(left) << 32) | static_cast<std::uint32_t>(right);
  std::size_t mask = merge_keys_.size() - 1;
  for (std::size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
    if (merge_keys_[i] == key) return &merge_values_[i];
    if (merge_keys_[i] == kEmpty) return nullptr;
  }
}

void Bpe::grow_merges() {
  std::vector<std::uint64_t> keys(merge_keys_.size() * 2, kEmpty);
  std::vector<Merge> values(keys.size());
  std::size_t mask = keys.size() - 1;
  for (std::size_t j = 0; j < merge_keys_.size(); ++j) {
    if (merge_keys_[j] == kEmpty) continue;
    std::size_t i = mix64(merge_keys_[j]) & mask;
    while (keys[i] != kEmpty) i = (i + 1) & mask;
    keys[i] = merge_keys_[j];
    values[i] = merge_values_[j];
  }
  merge_keys_.swap(keys);
  merge_values_.swap(values);
}

void Bpe::add_merge(std::int32_t left, std::int32_t right, std::uint32_t rank, std::int32_t merged) {
  if ((merge_count_ + 1) * 2 > merge_keys_.size()) grow_merges();
  std::uint64_t key = (static_cast<std::uint64_t>(left) << 32) | static_cast<std::uint32_t>(right);
  std::size_t mask = merge_keys_.size() - 1;
  std::size_t i = mix64(key) & mask;
  while (merge_keys_[i] != kEmpty && merge_keys_[i] != key) i = (i + 1) & mask;
  if (merge_keys_[i] == kEmpty) ++merge_count_;
  merge_keys_[i] = key;
  merge_values_[i] = {rank, merged};
}

void Bpe::initial_symbols(std::string_view word, std::vector<std::int32_t>& symbols) const {
  // One symbol per byte (one per character of the byte-level string). A byte whose
  // character is not in the vocab becomes the unk token (consecutive ones fused into one
  // when fuse_unk), or is dropped when the model has no unk token, as tokenizers does.
  symbols.clear();
  bool last_unk = false;
  for (char ch : word) {
    std::int32_t id = byte_id_[static_cast<unsigned char>(ch)];
    if (id >= 0) {
      symbols.push_back(id);
      last_unk = false;
    } else if (unk_id_) {
      if (!(fuse_unk_ && last_unk)) symbols.push_back(*unk_id_);
      last_unk = true;
    }
  }
}

void Bpe::merge_short(std::vector<std::int32_t>& s) const {
  // rank[i]: the rank of the merge of (s[i], s[i+1]); UINT32_MAX when there is none.
  constexpr std::uint32_t kNone = UINT32_MAX;
  std::uint32_t rank[kShortWord];
  std::int32_t merged[kShortWord];
  auto look = [&](std::size_t i) {
    const Merge* m = find_merge(s[i], s[i + 1]);
    rank[i] = m ? m->rank : kNone;
    merged[i] = m ? m->merged : -1;
  };
  std::size_t n = s.size();
  for (std::size_t i = 0; i + 1 < n; ++i) look(i);
  while (n > 1) {
    std::size_t best = 0;
    for (std::size_t i = 1; i + 1 < n; ++i)
      if (rank[i] < rank[best]) best = i;
    if (rank[best] == kNone) break;
    s[best] = merged[best];
    for (std::size_t i = best + 1; i + 1 < n; ++i) s[i] = s[i + 1];
    for (std::size_t i = best + 1; i + 2 < n; ++i) {
      rank[i] = rank[i + 1];
      merged[i] = merged[i + 1];
    }
    --n;
    if (best + 1 < n) look(best);
    if (best > 0) look(best - 1);
  }
  s.resize(n);
}

void Bpe::merge_long(std::vector<std::int32_t>& s) const {
  struct Candidate {
    std::uint32_t rank;
    std::uint32_t pos;
    std::int32_t merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::size_t n = s.size();
  std::vector<std::int32_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (std::size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<std::int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<std::int32_t>(i + 1) : -1;
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto push = [&](std::int32_t pos) {
    if (pos < 0 || next[pos] < 0) return;
    if (const Merge* m = find_merge(s[pos], s[next[pos]]))
      queue.push({m->rank, static_cast<std::uint32_t>(pos), m->merged});
  };
  for (std::size_t i = 0; i + 1 < n; ++i) push(static_cast<std::int32_t>(i));
  while (!queue.empty()) {
    Candidate c = queue.top();
    queue.pop();
    std::int32_t pos = static_cast<std::int32_t>(c.pos);
    if (!alive[pos] || next[pos] < 0) continue;
    const Merge* m = find_merge(s[pos], s[next[pos]]);
    if (!m || m->merged != c.merged) continue;  // a stale candidate: the pair has changed
    std::int32_t gone = next[pos];
    s[pos] = c.merged;
    alive[gone] = false;
    next[pos] = next[gone];
    if (next[pos] >= 0) prev[next[pos]] = pos;
    push(prev[pos]);
    push(pos);
  }
  std::size_t k = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (alive[i]) s[k++] = s[i];
  s.resize(k);
}

void Bpe::encode_word(std::string_view word, std::vector<std::int32_t>& out) const {
  if (ignore_merges_) {
    if (auto it = whole_words_.find(word); it != whole_words_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  WordCache* cache = nullptr;
  if (word.size() <= kCacheWordBytes) {
    cache = &thread_cache(serial_);
    if (auto it = cache->words.find(word); it != cache->words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  thread_local std::vector<std::int32_t> symbols;
  initial_symbols(word, symbols);
  if (symbols.size() <= kShortWord) {
    merge_short(symbols);
  } else {
    merge_long(symbols);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
  if (cache) {
    if (cache->words.size() >= kCacheWords) cache->words.clear();
    cache->words.emplace(std::string(word), symbols);
  }
}

}  // namespace sft::data::hf
