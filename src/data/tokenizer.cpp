#include "sft/data/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <type_traits>

#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"

namespace sft::data {

struct Tokenizer::Processor {
  sentencepiece::SentencePieceProcessor sp;
};

namespace {

// A character no tokenizer merges with its neighbours (it falls back to a byte piece):
// encoding kSentinel + text and dropping the sentinel's ids yields text's ids without the
// dummy-prefix space that sentencepiece adds at the start of every encode.
constexpr std::string_view kSentinel = "\x01";

}  // namespace

std::shared_ptr<const Tokenizer> Tokenizer::load(const std::string& model_path) {
  if (!fs::exists(model_path)) throw Error(model_path + ": tokenizer model not found");
  std::shared_ptr<Tokenizer> t(new Tokenizer());
  t->proc_ = std::make_unique<Processor>();
  auto& sp = t->proc_->sp;
  if (auto status = sp.Load(model_path); !status.ok())
    throw Error(model_path + ": not a sentencepiece model: " + status.ToString());
  t->path_ = model_path;
  t->sha256_ = sha256_file(model_path);
  t->bos_ = sp.bos_id();
  t->eos_ = sp.eos_id();
  t->pad_ = sp.pad_id();
  t->unk_ = sp.unk_id();
  t->vocab_ = sp.GetPieceSize();
  auto a = t->encode("a");
  t->dummy_prefix_ = !a.empty() && t->piece(a[0]).rfind("\xe2\x96\x81", 0) == 0;  // U+2581 '▁'
  t->sentinel_ids_ = t->encode(kSentinel);
  return t;
}

Tokenizer::~Tokenizer() = default;

static_assert(std::is_same_v<int, std::int32_t>, "sentencepiece's ids are ints; sft's are int32");

std::vector<std::int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<std::int32_t> ids;
  if (auto status = proc_->sp.Encode(text, &ids); !status.ok())
    throw Error(path_ + ": sentencepiece failed to encode a text of " + std::to_string(text.size()) +
                " bytes: " + status.ToString());
  return ids;
}

std::vector<std::int32_t> Tokenizer::encode_continuation(std::string_view text) const {
  if (!dummy_prefix_ || text.empty()) return encode(text);
  std::string s(kSentinel);
  s.append(text);
  std::vector<std::int32_t> ids = encode(s);
  if (ids.size() >= sentinel_ids_.size() &&
      std::equal(sentinel_ids_.begin(), sentinel_ids_.end(), ids.begin())) {
    ids.erase(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(sentinel_ids_.size()));
    return ids;
  }
  return encode(text);  // the sentinel merged with the text: fall back to a plain encode
}

std::string Tokenizer::decode(const std::vector<std::int32_t>& ids) const {
  // sentencepiece rejects ids outside the vocabulary with an error status; so do we.
  std::string out;
  if (auto status = proc_->sp.Decode(ids, &out); !status.ok())
    throw Error(path_ + ": sentencepiece failed to decode: " + status.ToString());
  return out;
}

std::string Tokenizer::piece(std::int32_t id) const {
  if (id < 0 || id >= vocab_) return "<invalid:" + std::to_string(id) + ">";
  return proc_->sp.IdToPiece(id);
}

std::optional<std::int32_t> Tokenizer::piece_id(std::string_view piece) const {
  std::int32_t id = proc_->sp.PieceToId(piece);
  if (id < 0 || id == unk_) return std::nullopt;
  return id;
}

bool Tokenizer::is_control(std::int32_t id) const {
  return id >= 0 && id < vocab_ && proc_->sp.IsControl(id);
}

}  // namespace sft::data
