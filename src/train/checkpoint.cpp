#include "sft/train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "sft/model/safetensors.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"
#include "sft/util/log.h"

namespace sft::train {

CheckpointStore::CheckpointStore(std::string root) : root_(std::move(root)) {}

std::string CheckpointStore::save(std::int64_t global_step,
                                  const std::map<std::string, std::vector<std::pair<std::string, at::Tensor>>>& files,
                                  const nlohmann::json& state) {
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(global_step));
  const std::string final_dir = fs::join(root_, name);
  const std::string tmp = final_dir + ".tmp." + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::make_dirs(tmp);
  nlohmann::json manifest = {{"global_step", global_step}, {"files", nlohmann::json::object()}};
  auto add = [&](const std::string& file) {
    std::string path = fs::join(tmp, file);
    manifest["files"][file] = {{"sha256", sha256_file(path)}, {"bytes", fs::file_size(path)}};
  };
  for (const auto& [file, tensors] : files) {
    model::write_safetensors(fs::join(tmp, file), tensors);
    add(file);
  }
  fs::write_file_atomic(fs::join(tmp, "trainer_state.json"), state.dump(1) + "\n");
  add("trainer_state.json");
  fs::write_file_atomic(fs::join(tmp, "manifest.json"), manifest.dump(1) + "\n");
  fs::fsync_dir(tmp);
  fs::remove_all(final_dir);  // a stale folder of the same step (e.g. after a crash during prune)
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) throw CheckpointError(final_dir + ": cannot rename " + tmp + " into place");
  fs::fsync_dir(root_);
  return final_dir;
}

std::string CheckpointStore::save_sharded(std::int64_t global_step, int rank,
                                          const std::map<std::string, std::vector<std::pair<std::string, at::Tensor>>>& files,
                                          const nlohmann::json& state, const std::function<void()>& barrier) {
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(global_step));
  const std::string final_dir = fs::join(root_, name);
  const std::string tmp = final_dir + ".tmp.sharded";  // one name that every rank knows
  if (rank == 0) {
    fs::remove_all(tmp);
    fs::make_dirs(tmp);
  }
  barrier();
  for (const auto& [file, tensors] : files) model::write_safetensors(fs::join(tmp, file), tensors);
  barrier();
  if (rank == 0) {
    nlohmann::json manifest = {{"global_step", global_step}, {"files", nlohmann::json::object()}};
    fs::write_file_atomic(fs::join(tmp, "trainer_state.json"), state.dump(1) + "\n");
    for (const auto& f : fs::list_dir(tmp)) {
      if (f == "manifest.json") continue;
      const std::string path = fs::join(tmp, f);
      manifest["files"][f] = {{"sha256", sha256_file(path)}, {"bytes", fs::file_size(path)}};
    }
    fs::write_file_atomic(fs::join(tmp, "manifest.json"), manifest.dump(1) + "\n");
    fs::fsync_dir(tmp);
    fs::remove_all(final_dir);
    if (::rename(tmp.c_str(), final_dir.c_str()) != 0) throw CheckpointError(final_dir + ": cannot rename " + tmp + " into place");
    fs::fsync_dir(root_);
  }
  barrier();
  return final_dir;
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
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.global_step > b.global_step; });
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
  if (!m.contains("files") || !m["files"].is_object() || m["files"].empty()) return "manifest.json lists no files";
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
