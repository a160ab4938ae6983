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
      b.enc.trained.resize(static_cast<std::size_t>(data.max_seq_len));
      b.truncated = true;
    }
  }
  if (b.status == SampleStatus::kOk) {
    bool any = false;
    for (std::size_t t = 1; t < b.enc.trained.size(); ++t) any |= b.enc.trained[t] != 0;
    if (!any) b.status = SampleStatus::kZeroTarget;
  }
  return b;
}

std::string cache_key(const config::DatasetSpec& dataset, const config::DataSpec& data, const Tokenizer& tok,
                      const ChatTemplate& tmpl, const std::string& data_sha) {
  nlohmann::json k = {{"version", kCacheVersion},
                      {"data_sha256", data_sha},
                      {"tokenizer_sha256", tok.sha256()},
                      {"template", tmpl.name()},
                      {"system", tmpl.default_system()},
                      {"has_system", tmpl.has_default_system()},
                      {"format", config::name(dataset.format)},
                      {"strip_calculator", dataset.strip_calculator},
                      {"filter_field", dataset.filter_field},
                      {"filter_equals", dataset.filter_equals},
                      {"text_field", dataset.text_field},
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
          {"target_tokens", s.trained_tokens},
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
  s.trained_tokens = j.at("target_tokens");
  for (const auto& b : j.at("first_bad")) {
    const std::string where = b.at("where");
    s.first_bad.push_back({where.rfind(':', 0) == 0 ? file + where : where, b.at("reason")});
  }
  return s;
}

const char* kFiles[] = {"ids.bin",       "mask.bin",  "offsets.bin", "status.bin",
                        "truncated.bin", "lines.bin", "indices.bin", "record_ids.txt"};

// record_ids.txt's lines (each id ends with '\n').
std::vector<std::string> split_ids(const std::string& text) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    out.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return out;
}

// A cache folder as read back: ids and trained flags (mask.bin) mapped, the per-sample columns copied.
struct Cached {
  std::shared_ptr<fs::MappedFile> ids_map, trained_map;
  std::vector<std::int64_t> offsets;
  std::vector<std::uint8_t> status, truncated;
  std::vector<std::int64_t> lines, indices;
  std::vector<std::string> record_ids;
  DatasetStats stats;
};

// Throws (any std::exception) when the cache at `dir` is not `key`'s or is damaged.
Cached read_cache(const std::string& dir, const std::string& key, const std::string& file) {
  auto meta = nlohmann::json::parse(fs::read_file(fs::join(dir, "meta.json")));
  if (meta.at("key") != key) throw Error("key mismatch");
  for (const char* f : kFiles) {
    std::string want = meta.at("sha256").at(f);
    if (sha256_file(fs::join(dir, f)) != want) throw Error(std::string(f) + " checksum mismatch");
  }
  Cached c;
  c.ids_map = fs::MappedFile::open(fs::join(dir, "ids.bin"));
  c.trained_map = fs::MappedFile::open(fs::join(dir, "mask.bin"));
  c.offsets = vector_from<std::int64_t>(*fs::MappedFile::open(fs::join(dir, "offsets.bin")));
  c.status = vector_from<std::uint8_t>(*fs::MappedFile::open(fs::join(dir, "status.bin")));
  c.truncated = vector_from<std::uint8_t>(*fs::MappedFile::open(fs::join(dir, "truncated.bin")));
  c.lines = vector_from<std::int64_t>(*fs::MappedFile::open(fs::join(dir, "lines.bin")));
  c.indices = vector_from<std::int64_t>(*fs::MappedFile::open(fs::join(dir, "indices.bin")));
  c.record_ids = split_ids(fs::read_file(fs::join(dir, "record_ids.txt")));
  const std::size_t n = c.status.size();
  const std::int64_t total = c.offsets.empty() ? -1 : c.offsets.back();
  if (c.offsets.size() != n + 1 || c.truncated.size() != n || c.lines.size() != n || c.indices.size() != n ||
      c.record_ids.size() != n ||
      c.ids_map->size() != static_cast<std::size_t>(total) * sizeof(std::int32_t) ||
      c.trained_map->size() != static_cast<std::size_t>(total))
    throw Error("inconsistent sizes");
  c.stats = stats_from(meta.at("stats"), file);
  return c;
}

// Templates and tokenizes every record (up to 4 threads).
std::vector<Built> build_samples(const ReadResult& rr, const ChatTemplate& tmpl, const Tokenizer& tok,
                                 const config::DataSpec& data) {
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
  return built;
}

// The samples laid end to end, as the cache stores them.
struct Columns {
  std::vector<std::int32_t> ids;
  std::vector<std::uint8_t> trained, status, truncated;  // trained: Encoded::trained, as mask.bin
  std::vector<std::int64_t> offsets, lines, indices;
  std::string record_ids;
};

// Lays out the built samples (a too-long one as empty) and counts them into `s`.
Columns lay_out(const ReadResult& rr, std::vector<Built>& built, DatasetStats& s) {
  const std::size_t n = rr.records.size();
  Columns c;
  c.status.resize(n);
  c.truncated.resize(n);
  c.offsets.assign(n + 1, 0);
  c.lines.resize(n);
  c.indices.resize(n);
  s.read = rr.read;
  s.bad = static_cast<std::int64_t>(rr.bad.size());
  s.filtered = rr.filtered;
  s.trailing_user_turns = rr.trailing_user_turns;
  for (std::size_t i = 0; i < rr.bad.size() && i < 5; ++i) s.first_bad.push_back(rr.bad[i]);
  for (std::size_t i = 0; i < n; ++i) {
    Built& b = built[i];
    if (b.status == SampleStatus::kTooLong) {
      b.enc.ids.clear();
      b.enc.trained.clear();
    }
    c.ids.insert(c.ids.end(), b.enc.ids.begin(), b.enc.ids.end());
    c.trained.insert(c.trained.end(), b.enc.trained.begin(), b.enc.trained.end());
    c.offsets[i + 1] = static_cast<std::int64_t>(c.ids.size());
    c.status[i] = static_cast<std::uint8_t>(b.status);
    c.truncated[i] = b.truncated ? 1 : 0;
    c.lines[i] = rr.records[i].origin.line;
    c.indices[i] = rr.records[i].origin.index;
    c.record_ids += rr.records[i].origin.id;
    c.record_ids += '\n';
    s.truncated += b.truncated ? 1 : 0;
    if (b.status == SampleStatus::kZeroTarget)
      ++s.zero_target;
    else if (b.status == SampleStatus::kTooLong)
      ++s.too_long;
    else {
      ++s.kept;
      s.tokens += static_cast<std::int64_t>(b.enc.ids.size());
      for (std::size_t k = 1; k < b.enc.trained.size(); ++k) s.trained_tokens += b.enc.trained[k];
    }
  }
  return c;
}

// Writes the cache atomically: a temporary folder, fsynced files, renamed into place.
void write_cache(const std::string& dir, const std::string& cache_dir, nlohmann::json meta,
                 const Columns& c) {
  std::string tmp = dir + ".tmp." + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::make_dirs(tmp);
  std::vector<std::pair<const char*, std::string>> files = {{"ids.bin", bytes_of(c.ids)},
                                                            {"mask.bin", bytes_of(c.trained)},
                                                            {"offsets.bin", bytes_of(c.offsets)},
                                                            {"status.bin", bytes_of(c.status)},
                                                            {"truncated.bin", bytes_of(c.truncated)},
                                                            {"lines.bin", bytes_of(c.lines)},
                                                            {"indices.bin", bytes_of(c.indices)},
                                                            {"record_ids.txt", c.record_ids}};
  for (auto& [name, bytes] : files) {
    fs::write_file_atomic(fs::join(tmp, name), bytes);
    meta["sha256"][name] = sha256_hex(bytes);
  }
  fs::write_file_atomic(fs::join(tmp, "meta.json"), meta.dump(1));
  fs::remove_all(dir);
  if (::rename(tmp.c_str(), dir.c_str()) != 0) fs::remove_all(tmp);  // another rank won the race
  fs::fsync_dir(cache_dir);
}

}  // namespace

std::int64_t TokenizedDataset::trained_tokens(std::int64_t i) const {
  std::int64_t n = 0;
  const std::uint8_t* m = trained(i);
  for (std::int64_t t = 1; t < length(i); ++t) n += m[t];
  return n;
}

Origin TokenizedDataset::origin(std::int64_t i) const {
  return {file_, lines_[static_cast<std::size_t>(i)], indices_[static_cast<std::size_t>(i)],
          record_ids_[static_cast<std::size_t>(i)]};
}

ChatTemplate template_for(const config::RunConfig& cfg, const config::DatasetSpec& dataset,
                          const Tokenizer& tok) {
  std::optional<std::string> system = dataset.system_message ? dataset.system_message : cfg.system_message;
  ChatTemplate t = ChatTemplate::create(cfg.chat_template, system, &tok);
  t.check_tokenizer(tok);
  return t;
}

std::shared_ptr<const TokenizedDataset> prepare_dataset(const config::DatasetSpec& dataset,
                                                        const config::DataSpec& data, const Tokenizer& tok,
                                                        const ChatTemplate& tmpl, bool* rebuilt) {
  if (!fs::exists(dataset.path))
    throw DataError(dataset.path + ": dataset file not found (datasets." + dataset.name + ".path)");
  fs::require_regular_file(dataset.path,
                           "datasets." + dataset.name + ".path");  // a FIFO or /dev/zero would hash forever
  const std::string data_sha = sha256_file(dataset.path);
  const std::string key = cache_key(dataset, data, tok, tmpl, data_sha);
  const std::string dir = fs::join(data.cache_dir, dataset.name + "-" + key.substr(0, 16));

  auto t = std::make_shared<TokenizedDataset>();
  t->name_ = dataset.name;
  t->key_ = key;
  t->dir_ = dir;
  t->file_ = dataset.path;

  // ---- try the cache -----------------------------------------------------------------
  if (fs::exists(fs::join(dir, "meta.json"))) {
    try {
      Cached c = read_cache(dir, key, dataset.path);
      t->ids_map_ = std::move(c.ids_map);
      t->trained_map_ = std::move(c.trained_map);
      t->ids_ = reinterpret_cast<const std::int32_t*>(t->ids_map_->data());
      t->trained_ = t->trained_map_->data();
      t->offsets_ = std::move(c.offsets);
      t->status_ = std::move(c.status);
      t->truncated_ = std::move(c.truncated);
      t->lines_ = std::move(c.lines);
      t->indices_ = std::move(c.indices);
      t->record_ids_ = std::move(c.record_ids);
      t->stats_ = std::move(c.stats);
      if (rebuilt) *rebuilt = false;
      return t;
    } catch (const std::exception& e) {
      sft::log::warn("{}: data cache is corrupt or stale ({}); rebuilding", dir, e.what());
    }
  }

  // ---- build, write, and serve from memory what was just written (identical bytes) -------
  ReadResult rr = read_dataset(dataset, data.on_bad_record, /*keep_unanswered=*/false, data.max_record_bytes);
  std::vector<Built> built = build_samples(rr, tmpl, tok, data);
  Columns c = lay_out(rr, built, t->stats_);
  write_cache(dir, data.cache_dir,
              {{"key", key},
               {"dataset", dataset.name},
               {"file", dataset.path},
               {"records", rr.records.size()},
               {"stats", stats_json(t->stats_, dataset.path)},
               {"sha256", nlohmann::json::object()}},
              c);
  if (rebuilt) *rebuilt = true;
  auto keep_ids = std::make_shared<std::vector<std::int32_t>>(std::move(c.ids));
  auto keep_trained = std::make_shared<std::vector<std::uint8_t>>(std::move(c.trained));
  t->ids_ = keep_ids->data();
  t->trained_ = keep_trained->data();
  t->owned_ids_ = keep_ids;
  t->owned_trained_ = keep_trained;
  t->offsets_ = std::move(c.offsets);
  t->status_ = std::move(c.status);
  t->truncated_ = std::move(c.truncated);
  t->lines_ = std::move(c.lines);
  t->indices_ = std::move(c.indices);
  t->record_ids_ = split_ids(c.record_ids);
  return t;
}

}  // namespace sft::data
