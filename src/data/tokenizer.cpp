#include "sft/data/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "sft/data/hf_tokenizer.h"
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

// A token as tokenizer_config.json writes it: a string, or an AddedToken {"content": ...}.
std::string token_text(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string())
    return j["content"].get<std::string>();
  return "";
}

nlohmann::json read_json(const std::string& path) {
  try {
    return nlohmann::json::parse(fs::read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(path + ": not valid JSON (" +
                      std::string(e.what()).substr(std::string(e.what()).find(']') + 2) + ")");
  }
}

}  // namespace

std::shared_ptr<const Tokenizer> Tokenizer::load(const std::string& path) {
  std::string file = path;
  if (fs::is_dir(path)) {
    // tokenizer.json first: LLaMA 3's folders also hold an original/tokenizer.model of tiktoken's.
    file = fs::exists(fs::join(path, "tokenizer.json")) ? fs::join(path, "tokenizer.json")
                                                        : fs::join(path, "tokenizer.model");
    if (!fs::exists(file))
      throw ConfigError(path + ": a folder without a tokenizer.json or tokenizer.model (tokenizer.path)");
  }
  if (!fs::exists(file))
    throw ConfigError(file +
                      ": tokenizer not found (a tokenizer.model, a tokenizer.json, or a folder holding one)");
  if (fs::is_dir(file)) throw ConfigError(file + ": a folder, not a tokenizer file");
  std::shared_ptr<Tokenizer> t(new Tokenizer());
  const bool json = file.size() >= 5 && file.compare(file.size() - 5, 5, ".json") == 0;
  if (json)
    t->load_hf(file);
  else
    t->load_sentencepiece(file);
  t->path_ = file;
  if (std::find(t->eos_ids_.begin(), t->eos_ids_.end(), t->eos_) == t->eos_ids_.end() && t->eos_ >= 0)
    t->eos_ids_.insert(t->eos_ids_.begin(), t->eos_);
  return t;
}

void Tokenizer::load_sentencepiece(const std::string& path) {
  kind_ = Kind::kSentencepiece;
  proc_ = std::make_unique<Processor>();
  auto& sp = proc_->sp;
  if (auto status = sp.Load(path); !status.ok())
    throw ConfigError(path +
                      ": not a sentencepiece model (nor a tokenizer.json): sentencepiece could not parse it");
  sha256_ = sha256_file(path);
  bos_ = sp.bos_id();
  eos_ = sp.eos_id();
  pad_ = sp.pad_id();
  unk_ = sp.unk_id();
  vocab_ = sp.GetPieceSize();
  bos_token_ = bos_ >= 0 ? sp.IdToPiece(bos_) : "";
  eos_token_ = eos_ >= 0 ? sp.IdToPiece(eos_) : "";
  auto a = encode("a");
  dummy_prefix_ = !a.empty() && piece(a[0]).rfind("\xe2\x96\x81", 0) == 0;  // U+2581 '▁'
  sentinel_ids_ = encode(kSentinel);
}

void Tokenizer::load_hf(const std::string& path) {
  kind_ = Kind::kHfJson;
  hf_ = HfTokenizer::load(path);
  sha256_ = hf_->sha256();
  vocab_ = hf_->vocab_size();
  unk_ = -1;
  if (auto b = hf_->bos_id()) bos_ = *b;
  // The folder's tokenizer_config.json names the special tokens; generation_config.json the
  // ids generation stops on. Each token named must be one of the tokenizer's.
  const std::string dir = fs::dirname(path).empty() ? "." : fs::dirname(path);
  auto id_of = [&](const std::string& file, const std::string& key, const std::string& text) -> std::int32_t {
    if (text.empty()) return -1;
    auto id = hf_->token_id(text);
    if (!id) throw ConfigError(file + ": " + key + " \"" + text + "\" is not a token of " + path);
    return *id;
  };
  if (const std::string tc = fs::join(dir, "tokenizer_config.json"); fs::exists(tc)) {
    const nlohmann::json j = read_json(tc);
    if (j.contains("bos_token")) {
      bos_token_ = token_text(j["bos_token"]);
      if (!bos_token_.empty()) bos_ = id_of(tc, "bos_token", bos_token_);
    }
    eos_token_ = j.contains("eos_token") ? token_text(j["eos_token"]) : "";
    eos_ = id_of(tc, "eos_token", eos_token_);
    pad_token_ = j.contains("pad_token") ? token_text(j["pad_token"]) : "";
    pad_ = id_of(tc, "pad_token", pad_token_);
    if (j.contains("chat_template") && j["chat_template"].is_string()) {
      chat_template_ = j["chat_template"].get<std::string>();
      chat_template_path_ = tc;
    } else if (j.contains("chat_template") && j["chat_template"].is_array()) {
      // Named templates ([{"name", "template"}]): transformers' default is the one named "default".
      for (const auto& t : j["chat_template"])
        if (t.is_object() && t.value("name", "") == "default" && t.contains("template") &&
            t["template"].is_string()) {
          chat_template_ = t["template"].get<std::string>();
          chat_template_path_ = tc;
        }
    }
  }
  if (const std::string jinja = fs::join(dir, "chat_template.jinja");
      chat_template_.empty() && fs::exists(jinja)) {
    chat_template_ = fs::read_file(jinja);
    chat_template_path_ = jinja;
  }
  if (const std::string gc = fs::join(dir, "generation_config.json"); fs::exists(gc)) {
    const nlohmann::json j = read_json(gc);
    if (j.contains("eos_token_id")) {
      const auto& e = j["eos_token_id"];
      std::vector<nlohmann::json> ids =
          e.is_array() ? std::vector<nlohmann::json>(e.begin(), e.end()) : std::vector<nlohmann::json>{e};
      for (const auto& x : ids) {
        if (!x.is_number_integer() || x.get<std::int64_t>() < 0 || x.get<std::int64_t>() >= vocab_)
          throw ConfigError(gc + ": eos_token_id " + x.dump() + " is not an id of " + path);
        eos_ids_.push_back(x.get<std::int32_t>());
      }
      if (eos_ < 0 && !eos_ids_.empty()) eos_ = eos_ids_.front();
    }
  }
}

Tokenizer::~Tokenizer() = default;

static_assert(std::is_same_v<int, std::int32_t>, "sentencepiece's ids are ints; sft's are int32");

std::vector<std::int32_t> Tokenizer::encode(std::string_view text) const {
  if (hf_) return hf_->encode(text);
  std::vector<std::int32_t> ids;
  if (auto status = proc_->sp.Encode(text, &ids); !status.ok())
    throw DataError(path_ + ": sentencepiece failed to encode a text of " + std::to_string(text.size()) +
                    " bytes");
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

std::vector<std::int32_t> Tokenizer::encode_with_special(std::string_view text) const {
  if (hf_) return hf_->encode_with_special(text);
  std::vector<std::int32_t> ids = encode(text);
  if (bos_ >= 0) ids.insert(ids.begin(), bos_);  // as HF's LlamaTokenizer (add_bos_token)
  return ids;
}

std::string Tokenizer::decode(const std::vector<std::int32_t>& ids) const {
  if (hf_) {
    for (auto id : ids)
      if (id < 0 || id >= vocab_)
        throw DataError(path_ + ": cannot decode id " + std::to_string(id) + ", outside the vocabulary");
    return hf_->decode(ids, /*skip_special=*/true);
  }
  // sentencepiece rejects ids outside the vocabulary with an error status; so do we.
  std::string out;
  if (auto status = proc_->sp.Decode(ids, &out); !status.ok())
    throw DataError(path_ + ": sentencepiece failed to decode: an id outside its vocabulary of " +
                    std::to_string(vocab_));
  return out;
}

std::string Tokenizer::piece(std::int32_t id) const {
  if (id < 0 || id >= vocab_) return "<invalid:" + std::to_string(id) + ">";
  if (hf_) return hf_->token(id);
  return proc_->sp.IdToPiece(id);
}

std::optional<std::string> Tokenizer::token_bytes(std::int32_t id) const {
  if (!hf_) return std::nullopt;
  return hf_->token_bytes(id);
}

std::optional<std::int32_t> Tokenizer::piece_id(std::string_view piece) const {
  if (hf_) return hf_->token_id(piece);
  std::int32_t id = proc_->sp.PieceToId(piece);
  if (id < 0 || id == unk_) return std::nullopt;
  return id;
}

bool Tokenizer::is_control(std::int32_t id) const {
  if (id < 0 || id >= vocab_) return false;
  if (hf_) return hf_->is_special(id);
  return proc_->sp.IsControl(id);
}

void Tokenizer::write_hf_files(const std::string& dir, const std::string& chat_template,
                               std::int64_t model_max_length) const {
  using nlohmann::json;
  json tc;
  if (hf_) {
    fs::write_file_atomic(fs::join(dir, "tokenizer.json"), fs::read_file(path_));
    // The original's tokenizer_config.json when there is one (its added-token table, class,
    // lengths), with this run's chat template; else the fast tokenizer's minimum.
    const std::string orig =
        fs::join(fs::dirname(path_).empty() ? "." : fs::dirname(path_), "tokenizer_config.json");
    tc = fs::exists(orig) ? read_json(orig) : json{{"tokenizer_class", "PreTrainedTokenizerFast"}};
    if (!bos_token_.empty()) tc["bos_token"] = bos_token_;
    if (!eos_token_.empty()) tc["eos_token"] = eos_token_;
    if (!pad_token_.empty()) tc["pad_token"] = pad_token_;
  } else {
    fs::write_file_atomic(fs::join(dir, "tokenizer.model"), fs::read_file(path_));
    // A slow LlamaTokenizer config, so AutoTokenizer needs nothing but tokenizer.model.
    tc = {{"tokenizer_class", "LlamaTokenizer"},
          {"bos_token", bos_token_},
          {"eos_token", eos_token_},
          {"unk_token", "<unk>"},
          {"add_bos_token", true},
          {"add_eos_token", false},
          {"clean_up_tokenization_spaces", false},
          {"legacy", true},
          {"pad_token", nullptr},
          {"sp_model_kwargs", json::object()}};
    if (model_max_length > 0) tc["model_max_length"] = model_max_length;
    json sm = {{"bos_token", bos_token_}, {"eos_token", eos_token_}, {"unk_token", "<unk>"}};
    fs::write_file_atomic(fs::join(dir, "special_tokens_map.json"), sm.dump(2) + "\n");
  }
  if (!chat_template.empty())
    tc["chat_template"] = chat_template;
  else
    tc.erase("chat_template");
  fs::write_file_atomic(fs::join(dir, "tokenizer_config.json"), tc.dump(2) + "\n");
  // What generation starts and stops on, as sft generates (every EOS id): written over the
  // model's own (which knows only config.json's ids), keeping the other fields of the
  // tokenizer folder's generation_config.json (sampling defaults) when it has one.
  const std::string orig_gc =
      fs::join(fs::dirname(path_).empty() ? "." : fs::dirname(path_), "generation_config.json");
  json gc = hf_ && fs::exists(orig_gc) ? read_json(orig_gc) : json::object();
  if (bos_ >= 0)
    gc["bos_token_id"] = bos_;
  else
    gc.erase("bos_token_id");
  if (!eos_ids_.empty()) gc["eos_token_id"] = eos_ids_.size() == 1 ? json(eos_ids_[0]) : json(eos_ids_);
  if (pad_ >= 0) gc["pad_token_id"] = pad_;
  fs::write_file_atomic(fs::join(dir, "generation_config.json"), gc.dump(2) + "\n");
}

}  // namespace sft::data
