// Reading and validating a tokenizer.json into HfTokenizer::Impl. Everything the file asks
// for is either implemented exactly or refused with a ConfigError naming the file and the
// JSON path; nothing is skipped silently. Where a field is absent, tokenizers' own default
// applies only where tokenizers has one (ignore_merges, fuse_unk, byte_fallback: false;
// ByteLevel's use_regex: true); the tests load such files with tokenizers too.
#include <sys/stat.h>

#include <algorithm>
#include <initializer_list>
#include <nlohmann/json.hpp>

#include "data/hf_tokenizer_impl.h"
#include "data/hf_unicode_sets.h"
#include "sft/util/error.h"
#include "sft/util/safe_io.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"

namespace sft::data {
namespace {

using nlohmann::json;

constexpr std::int64_t kMaxId = 1 << 24;  // ids at or above are refused (a hostile file's tables)
constexpr int kMaxDepth = 16;             // nested Sequences

std::string json_quote(const std::string& s) { return json(s).dump(); }

struct TemplateToken {
  std::string name, path;
  std::vector<std::int32_t> ids;
};

class Loader {
 public:
  Loader(const std::string& file, HfTokenizer::Impl& t) : file_(file), t_(t) {}

  void run(const json& root) {
    if (!root.is_object()) fail("", "expected a JSON object, found " + std::string(root.type_name()));
    allow_keys(root, "",
               {"version", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer",
                "post_processor", "decoder", "model"});
    for (const char* key : {"truncation", "padding"})
      if (root.contains(key) && !root[key].is_null())
        fail(key,
             "must be null: HfTokenizer never truncates or pads (the data pipeline packs sequences itself)");
    model(required(root, "", "model"), "model");
    if (root.contains("normalizer")) normalizer(root["normalizer"], "normalizer", 0);
    if (root.contains("added_tokens")) added_tokens(root["added_tokens"], "added_tokens");
    if (!root.contains("pre_tokenizer") || root["pre_tokenizer"].is_null())
      fail("pre_tokenizer", "missing: a byte-level BPE needs a ByteLevel pre-tokenizer");
    pre_tokenizer(root["pre_tokenizer"], "pre_tokenizer", 0);
    if (!byte_level_seen_) fail("pre_tokenizer", "has no ByteLevel step: only byte-level BPE is supported");
    id_tables();
    if (root.contains("post_processor")) post_processor(root["post_processor"], "post_processor", 0);
    template_ids();
    if (!root.contains("decoder") || root["decoder"].is_null())
      fail("decoder", "missing: a ByteLevel decoder is required");
    t_.byte_level_decoders = 0;
    decoder(root["decoder"], "decoder", 0);
  }

 private:
  [[noreturn]] void fail(const std::string& path, const std::string& msg) const {
    throw ConfigError(file_, 0, path, msg);
  }
  static std::string at(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }
  static std::string at(const std::string& path, std::size_t i) {
    return path + "[" + std::to_string(i) + "]";
  }

  const json& required(const json& obj, const std::string& path, const char* key) const {
    if (!obj.contains(key)) fail(at(path, key), "missing");
    return obj[key];
  }
  void allow_keys(const json& obj, const std::string& path, std::initializer_list<const char*> keys) const {
    for (const auto& [key, value] : obj.items())
      if (std::none_of(keys.begin(), keys.end(), [&](const char* k) { return key == k; }))
        fail(at(path, key), "unknown field: HfTokenizer does not know what it asks for, so refuses it");
  }
  const std::string& string_of(const json& v, const std::string& path) const {
    if (!v.is_string()) fail(path, "expected a string, found " + std::string(v.type_name()));
    return v.get_ref<const std::string&>();
  }
  bool bool_field(const json& obj, const std::string& path, const char* key,
                  std::optional<bool> absent) const {
    if (!obj.contains(key)) {
      if (absent) return *absent;
      fail(at(path, key), "missing");
    }
    if (!obj[key].is_boolean())
      fail(at(path, key), "expected true or false, found " + std::string(obj[key].type_name()));
    return obj[key].get<bool>();
  }
  std::int32_t id_of(const json& v, const std::string& path) const {
    if (!v.is_number_integer()) fail(path, "expected an integer id, found " + v.dump());
    std::int64_t id = v.is_number_unsigned()
                          ? static_cast<std::int64_t>(std::min<std::uint64_t>(v.get<std::uint64_t>(), kMaxId))
                          : v.get<std::int64_t>();
    if (id < 0 || id >= kMaxId) fail(path, "id " + v.dump() + " is outside [0, 2^24)");
    return static_cast<std::int32_t>(id);
  }
  const std::string& type_of(const json& node, const std::string& path) const {
    if (!node.is_object()) fail(path, "expected an object, found " + std::string(node.type_name()));
    return string_of(required(node, path, "type"), at(path, "type"));
  }

  // ---- model ----------------------------------------------------------------------------
  void model(const json& m, const std::string& path) {
    const std::string& type = type_of(m, path);
    if (type != "BPE") fail(at(path, "type"), json_quote(type) + " is not supported (only BPE)");
    allow_keys(m, path,
               {"type", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk",
                "byte_fallback", "ignore_merges", "vocab", "merges"});
    if (m.contains("dropout") && !m["dropout"].is_null() &&
        !(m["dropout"].is_number() && m["dropout"].get<double>() == 0))
      fail(at(path, "dropout"),
           m["dropout"].dump() + ": BPE dropout makes encoding random; only null or 0 is supported");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (m.contains(key) && !m[key].is_null() && !(m[key].is_string() && m[key].get<std::string>().empty()))
        fail(at(path, key), m[key].dump() + " is not supported (byte-level BPE uses none)");
    if (bool_field(m, path, "byte_fallback", false))
      fail(at(path, "byte_fallback"), "true is not supported (byte-level BPE needs no byte fallback)");
    bool ignore_merges = bool_field(m, path, "ignore_merges", false);
    bool fuse_unk = bool_field(m, path, "fuse_unk", false);

    const json& vocab = required(m, path, "vocab");
    std::string vpath = at(path, "vocab");
    if (!vocab.is_object())
      fail(vpath, "expected an object of token: id, found " + std::string(vocab.type_name()));
    std::vector<const std::string*> owner;
    for (const auto& [token, value] : vocab.items()) {
      std::string tpath = vpath + "[" + json_quote(token) + "]";
      std::int32_t id = id_of(value, tpath);
      if (static_cast<std::size_t>(id) >= owner.size()) owner.resize(id + 1, nullptr);
      if (owner[id]) fail(tpath, "id " + std::to_string(id) + " is also the id of " + json_quote(*owner[id]));
      owner[id] = &token;
      t_.vocab.emplace(token, id);
    }

    std::optional<std::int32_t> unk;
    if (m.contains("unk_token") && !m["unk_token"].is_null()) {
      const std::string& u = string_of(m["unk_token"], at(path, "unk_token"));
      auto it = t_.vocab.find(u);
      if (it == t_.vocab.end()) fail(at(path, "unk_token"), json_quote(u) + " is not in model.vocab");
      unk = it->second;
    }
    t_.bpe.set_vocab(t_.vocab, ignore_merges, unk, fuse_unk);
    merges(required(m, path, "merges"), at(path, "merges"));
  }

  void merges(const json& list, const std::string& path) {
    if (!list.is_array()) fail(path, "expected a list, found " + std::string(list.type_name()));
    bool legacy = !list.empty() && list[0].is_string();
    std::uint32_t rank = 0;
    for (std::size_t i = 0; i < list.size(); ++i) {
      const json& item = list[i];
      std::string ipath = at(path, i);
      std::string a, b;
      if (legacy) {
        if (!item.is_string())
          fail(ipath, "expected a \"left right\" string like the first merge, found " + item.dump());
        const std::string& line = item.get_ref<const std::string&>();
        if (line.starts_with("#version")) continue;  // tokenizers skips these header lines
        std::size_t space = line.find(' ');
        if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
          fail(ipath, json_quote(line) + " is not two tokens separated by one space");
        a = line.substr(0, space);
        b = line.substr(space + 1);
      } else {
        if (!item.is_array() || item.size() != 2 || !item[0].is_string() || !item[1].is_string())
          fail(ipath, "expected a [\"left\", \"right\"] pair like the first merge, found " + item.dump());
        a = item[0].get<std::string>();
        b = item[1].get<std::string>();
      }
      auto lookup = [&](const std::string& token) {
        auto it = t_.vocab.find(token);
        if (it == t_.vocab.end()) fail(ipath, json_quote(token) + " is not in model.vocab");
        return it->second;
      };
      std::int32_t left = lookup(a), right = lookup(b), merged = lookup(a + b);
      t_.bpe.add_merge(left, right, rank++, merged);
    }
  }

  // ---- normalizer -------------------------------------------------------------------------
  void normalizer(const json& n, const std::string& path, int depth) {
    if (n.is_null()) return;
    if (depth > kMaxDepth) fail(path, "Sequences nested too deep");
    const std::string& type = type_of(n, path);
    if (type == "NFC") {
      allow_keys(n, path, {"type"});
      t_.nfc = true;
    } else if (type == "Sequence") {
      allow_keys(n, path, {"type", "normalizers"});
      const json& list = required(n, path, "normalizers");
      if (!list.is_array()) fail(at(path, "normalizers"), "expected a list");
      for (std::size_t i = 0; i < list.size(); ++i)
        normalizer(list[i], at(at(path, "normalizers"), i), depth + 1);
    } else {
      fail(at(path, "type"), json_quote(type) + " is not supported (null, NFC, or a Sequence of those)");
    }
  }

  // ---- added tokens -----------------------------------------------------------------------
  void added_tokens(const json& list, const std::string& path) {
    if (!list.is_array()) fail(path, "expected a list, found " + std::string(list.type_name()));
    // tokenizers' AddedVocabulary gives a token in the vocab its vocab id, and any other
    // the next id after the vocab and the added tokens so far; ids in the file that differ
    // would be ignored by tokenizers (with a warning), so they are refused here.
    const auto vocab_len = static_cast<std::int64_t>(t_.vocab.size());
    std::int64_t max_added = -1;
    std::string rstrip_path, space_first_path;
    for (std::size_t i = 0; i < list.size(); ++i) {
      const json& a = list[i];
      std::string ipath = at(path, i);
      if (!a.is_object()) fail(ipath, "expected an object, found " + std::string(a.type_name()));
      allow_keys(a, ipath, {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"});
      hf::AddedToken tok;
      tok.content = string_of(required(a, ipath, "content"), at(ipath, "content"));
      tok.id = id_of(required(a, ipath, "id"), at(ipath, "id"));
      tok.special = bool_field(a, ipath, "special", std::nullopt);
      tok.lstrip = bool_field(a, ipath, "lstrip", std::nullopt);
      tok.rstrip = bool_field(a, ipath, "rstrip", std::nullopt);
      tok.normalized = bool_field(a, ipath, "normalized", std::nullopt);
      if (bool_field(a, ipath, "single_word", std::nullopt))
        fail(at(ipath, "single_word"),
             "true is not supported (tokenizers' word-boundary rule is not implemented)");
      if (tok.content.empty()) fail(at(ipath, "content"), "is empty");
      if (t_.added_ids.contains(tok.content))
        fail(at(ipath, "content"), json_quote(tok.content) + " is listed twice");
      std::int64_t expected;
      if (auto it = t_.vocab.find(tok.content); it != t_.vocab.end()) {
        expected = it->second;
      } else {
        expected = max_added < 0 ? vocab_len
                                 : (max_added >= vocab_len || vocab_len == 0 ? max_added + 1 : vocab_len);
        if (vocab_has_id(expected))
          fail(at(ipath, "id"), "tokenizers would give " + json_quote(tok.content) + " id " +
                                    std::to_string(expected) +
                                    ", which a vocab token already has (the vocab's ids have gaps)");
      }
      if (expected != tok.id)
        fail(at(ipath, "id"), std::to_string(tok.id) + " differs from the id tokenizers assigns to " +
                                  json_quote(tok.content) + " (" + std::to_string(expected) + ")");
      max_added = std::max(max_added, expected);
      if (tok.rstrip && rstrip_path.empty()) rstrip_path = ipath;
      if (space_first_path.empty() && begins_with_space(tok.content)) space_first_path = ipath;
      t_.added_ids.emplace(tok.content, tok.id);
      t_.added.push_back(std::move(tok));
    }
    if (!rstrip_path.empty() && !space_first_path.empty())
      fail(space_first_path, "an added token that begins with whitespace, beside an rstrip one (" +
                                 rstrip_path + "), makes tokenizers' matches overlap; not supported");
    // tokenizers matches special tokens first, then the others, each in file order; the
    // first of equal contents wins.
    for (bool special : {true, false})
      for (std::size_t i = 0; i < t_.added.size(); ++i) {
        const hf::AddedToken& tok = t_.added[i];
        if (tok.special != special) continue;
        if (tok.normalized) {
          t_.normalized_matcher.add(t_.nfc ? hf::nfc_normalize(tok.content) : tok.content,
                                    static_cast<std::int32_t>(i));
        } else {
          t_.raw_matcher.add(tok.content, static_cast<std::int32_t>(i));
        }
      }
  }
  bool vocab_has_id(std::int64_t id) {
    if (vocab_ids_.empty())
      for (const auto& [token, vid] : t_.vocab) {
        if (static_cast<std::size_t>(vid) >= vocab_ids_.size()) vocab_ids_.resize(vid + 1, false);
        vocab_ids_[vid] = true;
      }
    return id < static_cast<std::int64_t>(vocab_ids_.size()) && vocab_ids_[id];
  }
  static bool begins_with_space(const std::string& s) {
    std::size_t n = hf::utf8_sequence_length(s, 0);
    char32_t cp = static_cast<unsigned char>(s[0]);
    if (n > 1) {
      cp &= 0xFF >> (n + 1);
      for (std::size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[k]) & 0x3F);
    }
    return hf::in_ranges(hf::white_space_ranges(), cp);
  }

  // ---- pre-tokenizer ----------------------------------------------------------------------
  void pre_tokenizer(const json& p, const std::string& path, int depth) {
    if (depth > kMaxDepth) fail(path, "Sequences nested too deep");
    const std::string& type = type_of(p, path);
    if (byte_level_seen_) fail(path, "follows ByteLevel: ByteLevel must be the last pre-tokenizer step");
    if (type == "Sequence") {
      allow_keys(p, path, {"type", "pretokenizers"});
      const json& list = required(p, path, "pretokenizers");
      if (!list.is_array()) fail(at(path, "pretokenizers"), "expected a list");
      for (std::size_t i = 0; i < list.size(); ++i)
        pre_tokenizer(list[i], at(at(path, "pretokenizers"), i), depth + 1);
    } else if (type == "Split") {
      allow_keys(p, path, {"type", "pattern", "behavior", "invert"});
      hf::SplitStep step;
      const json& pattern = required(p, path, "pattern");
      std::string ppath = at(path, "pattern");
      if (!pattern.is_object() || pattern.size() != 1 ||
          !(pattern.contains("Regex") || pattern.contains("String")))
        fail(ppath, "expected {\"Regex\": ...} or {\"String\": ...}, found " + pattern.dump());
      bool regex = pattern.contains("Regex");
      std::string rpath = at(ppath, regex ? "Regex" : "String");
      const std::string& text = string_of(pattern.begin().value(), rpath);
      try {
        step.pattern = regex ? hf::Regex::compile(text) : hf::Regex::literal(text);
      } catch (const ConfigError& e) {
        fail(rpath, e.what());
      }
      const std::string& behavior = string_of(required(p, path, "behavior"), at(path, "behavior"));
      static const std::pair<const char*, hf::SplitBehavior> kBehaviors[] = {
          {"Removed", hf::SplitBehavior::kRemoved},
          {"Isolated", hf::SplitBehavior::kIsolated},
          {"MergedWithPrevious", hf::SplitBehavior::kMergedWithPrevious},
          {"MergedWithNext", hf::SplitBehavior::kMergedWithNext},
          {"Contiguous", hf::SplitBehavior::kContiguous}};
      auto it = std::find_if(std::begin(kBehaviors), std::end(kBehaviors),
                             [&](const auto& b) { return behavior == b.first; });
      if (it == std::end(kBehaviors))
        fail(at(path, "behavior"), json_quote(behavior) + " is not a Split behavior");
      step.behavior = it->second;
      step.invert = bool_field(p, path, "invert", std::nullopt);
      t_.splits.push_back(std::move(step));
    } else if (type == "ByteLevel") {
      allow_keys(p, path, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
      t_.add_prefix_space = bool_field(p, path, "add_prefix_space", std::nullopt);
      bool_field(p, path, "trim_offsets", false);  // offsets only: no effect on ids
      if (bool_field(p, path, "use_regex", true)) t_.byte_level_regex = hf::Regex::compile(kGpt2Pattern);
      byte_level_seen_ = true;
    } else {
      fail(at(path, "type"),
           json_quote(type) + " is not supported (Split, ByteLevel, or a Sequence of those)");
    }
  }

  // ---- ids ---------------------------------------------------------------------------------
  void id_tables() {
    std::int32_t size = 0;
    for (const auto& [token, id] : t_.vocab) size = std::max(size, id + 1);
    for (const auto& a : t_.added) size = std::max(size, a.id + 1);
    t_.id_token.assign(size, std::string());
    t_.id_bytes.assign(size, std::string());
    t_.id_present.assign(size, false);
    t_.id_special.assign(size, false);
    auto put = [&](const std::string& token, std::int32_t id) {
      t_.id_token[id] = token;
      t_.id_bytes[id] = hf::token_bytes(token).value_or(token);  // ByteLevel decodes others as they are
      t_.id_present[id] = true;
    };
    for (const auto& [token, id] : t_.vocab) put(token, id);
    for (const auto& a : t_.added) {
      put(a.content, a.id);
      t_.id_special[a.id] = a.special;
    }
  }

  // ---- post-processor ------------------------------------------------------------------------
  void post_processor(const json& p, const std::string& path, int depth) {
    if (p.is_null()) return;
    if (depth > kMaxDepth) fail(path, "Sequences nested too deep");
    const std::string& type = type_of(p, path);
    if (type == "ByteLevel") {
      allow_keys(p, path, {"type", "add_prefix_space", "trim_offsets", "use_regex"});  // offsets only
    } else if (type == "Sequence") {
      allow_keys(p, path, {"type", "processors"});
      const json& list = required(p, path, "processors");
      if (!list.is_array()) fail(at(path, "processors"), "expected a list");
      for (std::size_t i = 0; i < list.size(); ++i)
        post_processor(list[i], at(at(path, "processors"), i), depth + 1);
    } else if (type == "TemplateProcessing") {
      allow_keys(p, path, {"type", "single", "pair", "special_tokens"});
      if (template_seen_) fail(path, "a second TemplateProcessing is not supported");
      template_seen_ = true;
      template_single(p, path);
    } else {
      fail(at(path, "type"),
           json_quote(type) + " is not supported (null, ByteLevel, TemplateProcessing, or a Sequence)");
    }
  }

  // The single template: special tokens before and after one Sequence "A" (the pair
  // template is for pairs of texts, which HfTokenizer does not encode).
  void template_single(const json& p, const std::string& path) {
    const json& single = required(p, path, "single");
    std::string spath = at(path, "single");
    if (!single.is_array()) fail(spath, "expected a list");
    const json& specials = required(p, path, "special_tokens");
    if (!specials.is_object()) fail(at(path, "special_tokens"), "expected an object");
    bool seen_a = false;
    for (std::size_t i = 0; i < single.size(); ++i) {
      const json& item = single[i];
      std::string ipath = at(spath, i);
      if (!item.is_object() || item.size() != 1)
        fail(ipath, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
      if (item.contains("Sequence")) {
        const json& seq = item["Sequence"];
        std::string qpath = at(ipath, "Sequence");
        if (!seq.is_object()) fail(qpath, "expected an object");
        const std::string& id = string_of(required(seq, qpath, "id"), at(qpath, "id"));
        if (id != "A")
          fail(at(qpath, "id"), json_quote(id) + ": the single template may hold only sequence \"A\"");
        if (seen_a) fail(qpath, "sequence \"A\" appears twice");
        seen_a = true;
      } else if (item.contains("SpecialToken")) {
        const json& st = item["SpecialToken"];
        std::string tpath = at(ipath, "SpecialToken");
        if (!st.is_object()) fail(tpath, "expected an object");
        TemplateToken tok{string_of(required(st, tpath, "id"), at(tpath, "id")), tpath, {}};
        if (!specials.contains(tok.name))
          fail(at(tpath, "id"), json_quote(tok.name) + " is not in " + at(path, "special_tokens"));
        std::string dpath = at(path, "special_tokens") + "[" + json_quote(tok.name) + "]";
        const json& ids = required(specials[tok.name], dpath, "ids");
        if (!ids.is_array() || ids.empty()) fail(at(dpath, "ids"), "expected a non-empty list of ids");
        for (std::size_t k = 0; k < ids.size(); ++k)
          tok.ids.push_back(id_of(ids[k], at(at(dpath, "ids"), k)));
        tok.path = at(dpath, "ids");
        (seen_a ? suffix_ : prefix_).push_back(std::move(tok));
      } else {
        fail(ipath, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
      }
    }
    if (!seen_a) fail(spath, "has no sequence \"A\"");
  }

  void template_ids() {
    for (auto* side : {&prefix_, &suffix_})
      for (const TemplateToken& tok : *side)
        for (std::int32_t id : tok.ids) {
          if (id >= static_cast<std::int32_t>(t_.id_present.size()) || !t_.id_present[id])
            fail(tok.path, "id " + std::to_string(id) + " is not the id of any token");
          (side == &prefix_ ? t_.prefix_ids : t_.suffix_ids).push_back(id);
        }
    if (!prefix_.empty() && prefix_.front().ids.size() == 1) t_.bos = prefix_.front().ids.front();
  }

  // ---- decoder ----------------------------------------------------------------------------------
  void decoder(const json& d, const std::string& path, int depth) {
    if (depth > kMaxDepth) fail(path, "Sequences nested too deep");
    const std::string& type = type_of(d, path);
    if (type == "ByteLevel") {
      allow_keys(d, path, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
      ++t_.byte_level_decoders;
    } else if (type == "Sequence") {
      allow_keys(d, path, {"type", "decoders"});
      const json& list = required(d, path, "decoders");
      if (!list.is_array() || list.empty()) fail(at(path, "decoders"), "expected a non-empty list");
      for (std::size_t i = 0; i < list.size(); ++i) decoder(list[i], at(at(path, "decoders"), i), depth + 1);
    } else {
      fail(at(path, "type"), json_quote(type) + " is not supported (ByteLevel, or a Sequence of ByteLevel)");
    }
  }

  std::string file_;
  HfTokenizer::Impl& t_;
  bool byte_level_seen_ = false, template_seen_ = false;
  std::vector<TemplateToken> prefix_, suffix_;
  std::vector<bool> vocab_ids_;
};

}  // namespace

std::unique_ptr<HfTokenizer::Impl> HfTokenizer::Impl::load(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw ConfigError(path + ": tokenizer.json not found");
  if (static_cast<std::uint64_t>(st.st_size) > HfTokenizer::kMaxFileBytes)
    throw ConfigError(path + ": " + std::to_string(st.st_size) + " bytes; tokenizer.json files above " +
                      std::to_string(HfTokenizer::kMaxFileBytes >> 20) + " MiB are refused");
  std::string text;
  try {
    text = fs::read_file(path);
  } catch (const Error& e) {
    throw ConfigError(e.what());
  }
  if (text.size() > HfTokenizer::kMaxFileBytes)  // grew since stat
    throw ConfigError(path + ": tokenizer.json files above " +
                      std::to_string(HfTokenizer::kMaxFileBytes >> 20) + " MiB are refused");
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    throw ConfigError(path + ": not valid JSON: " + json_error_text(e));
  }
  auto t = std::make_unique<Impl>();
  t->path = path;
  t->sha256 = sha256_hex(text);
  Loader(path, *t).run(root);
  return t;
}

}  // namespace sft::data
