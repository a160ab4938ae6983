#include "sft/data/tokenized_dataset.h"

#include <unistd.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "sft/util/error.h"
#include "sft/util/safe_io.h"
#include "sft/util/hash.h"
#include "sft/util/log.h"

namespace sft::data {
namespace {

// 2: bad records' places stored without the file's path; 3: a tokenizer.json encodes
// consecutive text segments as one text, and the key says whether there is a default system.
constexpr int kCacheVersion = 3;

template <typename T>
std::string bytes_of(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

template <typename T>
std::vector<T> vector_from(const fs::MappedFile& m) {
  std::vector<T> v(m.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), m.data(), v.size() * sizeof(T));
  return v;
}

struct Built {
  Encoded enc;
  SampleStatus status = SampleStatus::kOk;
  bool truncated = false;
};

Built build_sample(const Record& r, const ChatTemplate& tmpl, const Tokenizer& tok,
                   const config::DataSpec& data) {
  Built b;
  b.enc = ChatTemplate::encode(tmpl.segments(r), tok);
  auto n = static_cast<std::int64_t>(b.enc.ids.size());
  if (n > data.max_seq_len) {
    if (data.truncation == config::Truncation::kDrop) {
      b.status = SampleStatus::kTooLong;
    } else {
      b.enc.ids.resize(static_cast<std::size_t>(data.max_seq_len));
      b.enc.mask.resize(static_cast<std::size_t>(data.max_seq_len));
      b.truncated = true;
    }
  }
  if (b.status == SampleStatus::kOk) {
    bool any = false;
    for (std::size_t t = 1; t < b.enc.mask.size(); ++t) any |= b.enc.mask[t] != 0;
    if (!any) b.status = SampleStatus::kZeroTarget;
  }
  return b;
}

std::string cache_key(const config::DatasetSpec& spec, const config::DataSpec& data, const Tokenizer& tok,
                      const ChatTemplate& tmpl, const std::string& data_sha) {
  nlohmann::json k = {{"version", kCacheVersion},
                      {"data_sha256", data_sha},
                      {"tokenizer_sha256", tok.sha256()},
                      {"template", tmpl.name()},
                      {"system", tmpl.default_system()},
                      {"has_system", tmpl.has_default_system()},
                      {"format", config::name(spec.format)},
                      {"strip_calculator", spec.strip_calculator},
                      {"filter_field", spec.filter_field},
                      {"filter_equals", spec.filter_equals},
                      {"text_field", spec.text_field},
                      {"max_seq_len", data.max_seq_len},
                      {"truncation", config::name(data.truncation)},
                      {"on_bad_record", config::name(data.on_bad_record)},
                      {"max_record_bytes", data.max_record_bytes}};
  return sha256_hex(k.dump());
}

// A bad record's place is stored without the file's path (":12 (array element 3, from 0)"):
// the cache is keyed by content, so the same file elsewhere reuses it, and its messages
// must name where the file is now.
nlohmann::json stats_json(const DatasetStats& s, const std::string& file) {
  nlohmann::json bad = nlohmann::json::array();
  for (const auto& b : s.first_bad)
    bad.push_back({{"where", b.where.rfind(file + ":", 0) == 0 ? b.where.substr(file.size()) : b.where},
                   {"reason", b.reason}});
  return {{"read", s.read},
          {"kept", s.kept},
          {"bad", s.bad},
          {"filtered", s.filtered},
          {"trailing_user_turns", s.trailing_user_turns},
          {"truncated", s.truncated},
          {"zero_target", s.zero_target},
          {"too_long", s.too_long},
          {"tokens", s.tokens},
          {"target_tokens", s.target_tokens},
          {"first_bad", bad}};
}

DatasetStats stats_from(const nlohmann::json& j, const std::string& file) {
  DatasetStats s;
  s.read = j.at("read");
  s.kept = j.at("kept");
  s.bad = j.at("bad");
  s.filtered = j.at("filtered");
  s.trailing_user_turns = j.at("trailing_user_turns");
  s.truncated = j.at("truncated");
  s.zero_target = j.at("zero_target");
  s.too_long = j.at("too_long");
  s.tokens = j.at("tokens");
  s.target_tokens = j.at("target_tokens");
  for (const auto& b : j.at("first_bad")) {
    const std::string where = b.at("where");
    s.first_bad.push_back({where.rfind(':', 0) == 0 ? file + where : where, b.at("reason")});
  }
  return s;
}

const char* kFiles[] = {"ids.bin",       "mask.bin",  "offsets.bin", "status.bin",
                        "truncated.bin", "lines.bin", "indices.bin", "record_ids.txt"};

}  // namespace

std::int64_t TokenizedDataset::targets(std::int64_t i) const {
  std::int64_t n = 0;
  const std::uint8_t* m = mask(i);
  for (std::int64_t t = 1; t < length(i); ++t) n += m[t];
  return n;
}

Origin TokenizedDataset::origin(std::int64_t i) const {
  return {file_, lines_[static_cast<std::size_t>(i)], indices_[static_cast<std::size_t>(i)],
          record_ids_[static_cast<std::size_t>(i)]};
}

ChatTemplate template_for(const config::RunConfig& cfg, const config::DatasetSpec& spec,
                          const Tokenizer& tok) {
  std::optional<std::string> system = spec.system_message ? spec.system_message : cfg.system_message;
  ChatTemplate t = ChatTemplate::create(cfg.chat_template, system, &tok);
  t.check_tokenizer(tok);
  return t;
}

std::shared_ptr<const TokenizedDataset> prepare_dataset(const config::DatasetSpec& spec,
                                                        const config::DataSpec& data, const Tokenizer& tok,
                                                        const ChatTemplate& tmpl, bool* rebuilt) {
  if (!fs::exists(spec.path))
    throw DataError(spec.path + ": dataset file not found (datasets." + spec.name + ".path)");
  fs::require_regular_file(spec.path,
                           "datasets." + spec.name + ".path");  // a FIFO or /dev/zero would hash forever
  const std::string data_sha = sha256_file(spec.path);
  const std::string key = cache_key(spec, data, tok, tmpl, data_sha);
  const std::string dir = fs::join(data.cache_dir, spec.name + "-" + key.substr(0, 16));

  auto t = std::make_shared<TokenizedDataset>();
  t->name_ = spec.name;
  t->key_ = key;
  t->dir_ = dir;
  t->file_ = spec.path;

  // ---- try the cache -----------------------------------------------------------------
  if (fs::exists(fs::join(dir, "meta.json"))) {
    try {
      auto meta = nlohmann::json::parse(fs::read_file(fs::join(dir, "meta.json")));
      if (meta.at("key") != key) throw Error("key mismatch");
      for (const char* f : kFiles) {
        std::string want = meta.at("sha256").at(f);
        if (sha256_file(fs::join(dir, f)) != want) throw Error(std::string(f) + " checksum mismatch");
      }
      t->ids_map_ = fs::MappedFile::open(fs::join(dir, "ids.bin"));
      t->mask_map_ = fs::MappedFile::open(fs::join(dir, "mask.bin"));
      t->ids_ = reinterpret_cast<const std::int32_t*>(t->ids_map_->data());
      t->mask_ = t->mask_map_->data();
      t->offsets_ = vector_from<std::int64_t>(*fs::MappedFile::open(fs::join(dir, "offsets.bin")));
      t->status_ = vector_from<std::uint8_t>(*fs::MappedFile::open(fs::join(dir, "status.bin")));
      t->truncated_ = vector_from<std::uint8_t>(*fs::MappedFile::open(fs::join(dir, "truncated.bin")));
      t->lines_ = vector_from<std::int64_t>(*fs::MappedFile::open(fs::join(dir, "lines.bin")));
      t->indices_ = vector_from<std::int64_t>(*fs::MappedFile::open(fs::join(dir, "indices.bin")));
      std::string ids_txt = fs::read_file(fs::join(dir, "record_ids.txt"));
      std::size_t pos = 0;
      while (pos < ids_txt.size()) {
        std::size_t nl = ids_txt.find('\n', pos);
        t->record_ids_.push_back(ids_txt.substr(pos, nl - pos));
        pos = nl + 1;
      }
      const std::size_t n = t->status_.size();
      const std::int64_t total = t->offsets_.empty() ? -1 : t->offsets_.back();
      if (t->offsets_.size() != n + 1 || t->truncated_.size() != n || t->lines_.size() != n ||
          t->indices_.size() != n || t->record_ids_.size() != n ||
          t->ids_map_->size() != static_cast<std::size_t>(total) * sizeof(std::int32_t) ||
          t->mask_map_->size() != static_cast<std::size_t>(total))
        throw Error("inconsistent sizes");
      t->stats_ = stats_from(meta.at("stats"), spec.path);
      if (rebuilt) *rebuilt = false;
      return t;
    } catch (const std::exception& e) {
      sft::log::warn("{}: data cache is corrupt or stale ({}); rebuilding", dir, e.what());
      t = std::make_shared<TokenizedDataset>();
      t->name_ = spec.name;
      t->key_ = key;
      t->dir_ = dir;
      t->file_ = spec.path;
    }
  }

  // ---- build ---------------------------------------------------------------------------
  ReadResult rr = read_dataset(spec, data.on_bad_record, /*keep_unanswered=*/false, data.max_record_bytes);
  const std::size_t n = rr.records.size();
  std::vector<Built> built(n);
  unsigned workers = std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
  if (n < 256) workers = 1;
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(workers);
  for (unsigned w = 0; w < workers; ++w) {
    pool.emplace_back([&, w] {
      try {
        for (std::size_t i = w; i < n; i += workers) built[i] = build_sample(rr.records[i], tmpl, tok, data);
      } catch (...) {
        errors[w] = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);

  std::vector<std::int32_t> ids;
  std::vector<std::uint8_t> mask, status(n), truncated(n);
  std::vector<std::int64_t> offsets(n + 1, 0), lines(n), indices(n);
  std::string record_ids;
  DatasetStats& s = t->stats_;
  s.read = rr.read;
  s.bad = static_cast<std::int64_t>(rr.bad.size());
  s.filtered = rr.filtered;
  s.trailing_user_turns = rr.trailing_user_turns;
  for (std::size_t i = 0; i < rr.bad.size() && i < 5; ++i) s.first_bad.push_back(rr.bad[i]);
  for (std::size_t i = 0; i < n; ++i) {
    Built& b = built[i];
    if (b.status == SampleStatus::kTooLong) {
      b.enc.ids.clear();
      b.enc.mask.clear();
    }
    ids.insert(ids.end(), b.enc.ids.begin(), b.enc.ids.end());
    mask.insert(mask.end(), b.enc.mask.begin(), b.enc.mask.end());
    offsets[i + 1] = static_cast<std::int64_t>(ids.size());
    status[i] = static_cast<std::uint8_t>(b.status);
    truncated[i] = b.truncated ? 1 : 0;
    lines[i] = rr.records[i].origin.line;
    indices[i] = rr.records[i].origin.index;
    record_ids += rr.records[i].origin.id;
    record_ids += '\n';
    s.truncated += b.truncated ? 1 : 0;
    if (b.status == SampleStatus::kZeroTarget)
      ++s.zero_target;
    else if (b.status == SampleStatus::kTooLong)
      ++s.too_long;
    else {
      ++s.kept;
      s.tokens += static_cast<std::int64_t>(b.enc.ids.size());
      for (std::size_t k = 1; k < b.enc.mask.size(); ++k) s.target_tokens += b.enc.mask[k];
    }
  }

  // ---- write atomically: temp folder, fsync, rename ---------------------------------------
  std::string tmp = dir + ".tmp." + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::make_dirs(tmp);
  std::vector<std::pair<const char*, std::string>> files = {{"ids.bin", bytes_of(ids)},
                                                            {"mask.bin", bytes_of(mask)},
                                                            {"offsets.bin", bytes_of(offsets)},
                                                            {"status.bin", bytes_of(status)},
                                                            {"truncated.bin", bytes_of(truncated)},
                                                            {"lines.bin", bytes_of(lines)},
                                                            {"indices.bin", bytes_of(indices)},
                                                            {"record_ids.txt", record_ids}};
  nlohmann::json meta = {{"key", key},
                         {"dataset", spec.name},
                         {"file", spec.path},
                         {"records", n},
                         {"stats", stats_json(s, spec.path)},
                         {"sha256", nlohmann::json::object()}};
  for (auto& [name, bytes] : files) {
    fs::write_file_atomic(fs::join(tmp, name), bytes);
    meta["sha256"][name] = sha256_hex(bytes);
  }
  fs::write_file_atomic(fs::join(tmp, "meta.json"), meta.dump(1));
  fs::remove_all(dir);
  if (::rename(tmp.c_str(), dir.c_str()) != 0) fs::remove_all(tmp);  // another rank won the race
  fs::fsync_dir(data.cache_dir);
  if (rebuilt) *rebuilt = true;

  // Serve from memory what was just written (identical bytes).
  auto keep_ids = std::make_shared<std::vector<std::int32_t>>(std::move(ids));
  auto keep_mask = std::make_shared<std::vector<std::uint8_t>>(std::move(mask));
  t->ids_map_.reset();
  t->ids_ = keep_ids->data();
  t->mask_ = keep_mask->data();
  t->owned_ids_ = keep_ids;
  t->owned_mask_ = keep_mask;
  t->offsets_ = std::move(offsets);
  t->status_ = std::move(status);
  t->truncated_ = std::move(truncated);
  t->lines_ = std::move(lines);
  t->indices_ = std::move(indices);
  std::size_t pos = 0;
  while (pos < record_ids.size()) {
    std::size_t nl = record_ids.find('\n', pos);
    t->record_ids_.push_back(record_ids.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return t;
}

}  // namespace sft::data
