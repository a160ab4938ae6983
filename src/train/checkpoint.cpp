#include "sft/train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <thread>

#include "sft/model/safetensors.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"
#include "sft/util/log.h"

namespace sft::train {

namespace {

std::string step_name(std::int64_t global_step) {
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(global_step));
  return name;
}

std::string mark_name(int rank) { return "rank" + std::to_string(rank) + ".written.json"; }

}  // namespace

struct CheckpointStore::Async {
  std::thread thread;
  std::exception_ptr failure;
  std::string dir;  // the completed folder (rank 0)
};

CheckpointStore::CheckpointStore(std::string root, std::size_t staging_bytes)
    : root_(std::move(root)), staging_bytes_(staging_bytes) {}

CheckpointStore::~CheckpointStore() {
  try {
    wait_async();
  } catch (const std::exception& e) {
    sft::log::error("checkpoint written in the background failed: {}", e.what());
  }
}

void CheckpointStore::write_files(const std::string& tmp, int rank, const TensorFiles& files) const {
  nlohmann::json written = nlohmann::json::object();
  for (const auto& [file, tensors] : files) {
    std::vector<model::SafetensorsStreamWriter::Entry> entries;
    for (const auto& [name, t] : tensors) entries.push_back({name, t.scalar_type(), t.sizes().vec()});
    model::SafetensorsStreamWriter w(fs::join(tmp, file), entries, {{"format", "pt"}}, staging_bytes_);
    for (const auto& [name, t] : tensors) w.write(t);
    w.commit();
    written[file] = {{"sha256", w.sha256()}, {"bytes", w.bytes()}};
  }
  fs::write_file_atomic(fs::join(tmp, mark_name(rank)), written.dump() + "\n");
}

std::string CheckpointStore::complete(const std::string& tmp, std::int64_t global_step, int writers,
                                      const nlohmann::json& state) const {
  nlohmann::json manifest = {{"global_step", global_step}, {"files", nlohmann::json::object()}};
  for (int r = 0; r < writers; ++r) {
    const std::string mark = fs::join(tmp, mark_name(r));
    const nlohmann::json written = nlohmann::json::parse(fs::read_file(mark));
    for (const auto& [file, entry] : written.items()) manifest["files"][file] = entry;
    fs::remove_all(mark);
  }
  const std::string state_path = fs::join(tmp, "trainer_state.json");
  fs::write_file_atomic(state_path, state.dump(1) + "\n");
  manifest["files"]["trainer_state.json"] = {{"sha256", sha256_file(state_path)},
                                             {"bytes", fs::file_size(state_path)}};
  fs::write_file_atomic(fs::join(tmp, "manifest.json"), manifest.dump(1) + "\n");
  fs::fsync_dir(tmp);
  const std::string final_dir = fs::join(root_, step_name(global_step));
  fs::remove_all(final_dir);  // a stale folder of the same step (e.g. after a crash during prune)
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0)
    throw CheckpointError(final_dir + ": cannot rename " + tmp + " into place");
  fs::fsync_dir(root_);
  return final_dir;
}

std::string CheckpointStore::save(std::int64_t global_step, const TensorFiles& files,
                                  const nlohmann::json& state) {
  const std::string tmp = fs::join(root_, step_name(global_step)) + ".tmp." + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::make_dirs(tmp);
  write_files(tmp, 0, files);
  return complete(tmp, global_step, 1, state);
}

std::string CheckpointStore::save_sharded(std::int64_t global_step, int rank, const TensorFiles& files,
                                          const nlohmann::json& state, const std::function<void()>& barrier) {
  const std::string tmp =
      fs::join(root_, step_name(global_step)) + ".tmp.sharded";  // one name that every rank knows
  if (rank == 0) {
    fs::remove_all(tmp);
    fs::make_dirs(tmp);
  }
  barrier();
  write_files(tmp, rank, files);
  barrier();
  std::string dir = fs::join(root_, step_name(global_step));
  if (rank == 0) {
    // The writers: every rank that left a mark (all of them, in a sharded run).
    int writers = 0;
    while (fs::exists(fs::join(tmp, mark_name(writers)))) ++writers;
    dir = complete(tmp, global_step, writers, state);
  }
  barrier();
  return dir;
}

void CheckpointStore::save_async(std::int64_t global_step, int rank, int writers, TensorFiles files,
                                 nlohmann::json state, std::chrono::seconds timeout, std::int64_t keep) {
  if (async_pending()) throw CheckpointError("a checkpoint is still being written in the background");
  async_ = std::make_unique<Async>();
  Async* a = async_.get();
  a->thread = std::thread([this, a, global_step, rank, writers, files = std::move(files),
                           state = std::move(state), timeout, keep] {
    try {
      // The folder's name is known to every rank; the earlier attempts' are gone (remove_temporaries).
      const std::string tmp = fs::join(root_, step_name(global_step)) + ".tmp.async";
      fs::make_dirs(tmp);
      write_files(tmp, rank, files);
      if (rank != 0) return;
      const auto deadline = std::chrono::steady_clock::now() + timeout;
      for (int r = 0; r < writers; ++r)
        while (!fs::exists(fs::join(tmp, mark_name(r)))) {
          if (std::chrono::steady_clock::now() > deadline)
            throw CheckpointError(tmp + ": rank " + std::to_string(r) + " did not write its shard within " +
                                  std::to_string(timeout.count()) + " s");
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      a->dir = complete(tmp, global_step, writers, state);
      prune(keep);
    } catch (...) {
      a->failure = std::current_exception();
    }
  });
}

bool CheckpointStore::async_pending() const { return async_ && async_->thread.joinable(); }

std::string CheckpointStore::wait_async() {
  if (!async_) return "";
  if (async_->thread.joinable()) async_->thread.join();
  std::unique_ptr<Async> a = std::move(async_);
  if (a->failure) std::rethrow_exception(a->failure);
  return a->dir;
}

std::vector<CheckpointInfo> CheckpointStore::list() const {
  std::vector<CheckpointInfo> out;
  for (const auto& n : fs::list_dir(root_)) {
    if (n.rfind("step_", 0) != 0 || n.find(".tmp") != std::string::npos) continue;
    try {
      std::size_t used = 0;
      long long step = std::stoll(n.substr(5), &used);
      if (used != n.size() - 5) continue;
      out.push_back({fs::join(root_, n), step});
    } catch (...) {
    }
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.global_step > b.global_step; });
  return out;
}

std::string CheckpointStore::verify(const std::string& dir) const {
  const std::string mpath = fs::join(dir, "manifest.json");
  if (!fs::exists(mpath)) return "manifest.json is missing";
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(fs::read_file(mpath));
  } catch (const std::exception& e) {
    return std::string("manifest.json is unreadable: ") + e.what();
  }
  if (!m.contains("files") || !m["files"].is_object() || m["files"].empty())
    return "manifest.json lists no files";
  for (auto it = m["files"].begin(); it != m["files"].end(); ++it) {
    const std::string path = fs::join(dir, it.key());
    if (!fs::exists(path)) return it.key() + " is missing";
    if (fs::file_size(path) != it.value().value("bytes", std::uint64_t(0)))
      return it.key() + " has " + std::to_string(fs::file_size(path)) + " bytes, the manifest says " +
             std::to_string(it.value().value("bytes", std::uint64_t(0))) + " (truncated?)";
    if (sha256_file(path) != it.value().value("sha256", std::string()))
      return it.key() + " does not match its SHA-256 checksum (corrupt)";
  }
  return "";
}

std::optional<CheckpointInfo> CheckpointStore::latest_good() const {
  for (const auto& c : list()) {
    std::string why = verify(c.dir);
    if (why.empty()) return c;
    sft::log::warn("checkpoint {} is unusable: {}; falling back to an older one", c.dir, why);
  }
  return std::nullopt;
}

void CheckpointStore::prune(std::int64_t keep) const {
  auto all = list();
  for (std::size_t i = static_cast<std::size_t>(std::max<std::int64_t>(keep, 1)); i < all.size(); ++i)
    fs::remove_all(all[i].dir);
}

std::vector<std::string> CheckpointStore::remove_temporaries() const {
  std::vector<std::string> removed;
  if (!fs::exists(root_)) return removed;
  for (const auto& n : fs::list_dir(root_)) {
    if (n.rfind("step_", 0) != 0 || n.find(".tmp.") == std::string::npos) continue;
    fs::remove_all(fs::join(root_, n));
    removed.push_back(n);
  }
  return removed;
}

nlohmann::json read_trainer_state(const std::string& dir) {
  return nlohmann::json::parse(fs::read_file(fs::join(dir, "trainer_state.json")));
}

}  // namespace sft::train
