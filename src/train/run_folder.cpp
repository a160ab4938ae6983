#include "sft/train/run_folder.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>

#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft::train {
namespace {

// Whether `dir`/config.resolved.json records `config` (an unreadable one records nothing).
bool records_this_run(const std::string& dir, const nlohmann::json& config) {
  const std::string path = fs::join(dir, "config.resolved.json");
  if (!fs::exists(path)) return false;
  try {
    // Through the same dump and parse as the stored one, so numbers compare alike.
    return nlohmann::json::parse(fs::read_file(path)).at("config") == nlohmann::json::parse(config.dump());
  } catch (const std::exception&) {
    return false;
  }
}

std::string listing(const std::string& dir, const std::vector<std::string>& entries) {
  std::string s;
  for (std::size_t i = 0; i < entries.size() && i < 6; ++i)
    s += (i ? ", " : "") + entries[i] + (fs::is_dir(fs::join(dir, entries[i])) ? "/" : "");
  if (entries.size() > 6) s += ", ... (" + std::to_string(entries.size()) + " entries)";
  return s;
}

}  // namespace

bool is_run_output(const std::string& entry) {
  static const char* const kNames[] = {"checkpoints", "final", "eval", "tensorboard", "metrics.jsonl",
                                       "config.resolved.json", "data_manifest.json", "eval.json"};
  for (const char* n : kNames)
    if (entry == n) return true;
  // stage<N>_<name>: the model exported at the end of stage N.
  if (entry.rfind("stage", 0) != 0) return false;
  std::size_t i = 5;
  while (i < entry.size() && std::isdigit(static_cast<unsigned char>(entry[i]))) ++i;
  return i > 5 && i + 1 < entry.size() && entry[i] == '_';
}

std::vector<std::string> outputs_to_replace(const std::string& dir, const nlohmann::json& config, bool has_checkpoints,
                                            bool resume, bool overwrite) {
  if (resume && has_checkpoints) return {};
  std::vector<std::string> outputs;
  for (const auto& e : fs::list_dir(dir))
    if (is_run_output(e) && (e != "checkpoints" || has_checkpoints)) outputs.push_back(e);  // crash temporaries only: pruned at start
  if (outputs.empty()) return {};  // files of the user's own (a config, notes) are not damaged by a run
  const bool same_run = records_this_run(dir, config);
  if (overwrite || (resume && same_run)) return outputs;
  if (has_checkpoints)
    throw ConfigError(dir + ": holds checkpoints of an earlier run; continue it with --resume auto, replace it with "
                      "--overwrite, or choose another --output-dir");
  std::string what = same_run ? "the outputs of an earlier attempt at this run"
                     : fs::exists(fs::join(dir, "config.resolved.json"))
                         ? "the outputs of another run (its config.resolved.json differs from this config)"
                         : "the outputs of another run";
  throw ConfigError(dir + ": holds " + what + " (" + listing(dir, outputs) +
                    "); a new run there would overwrite its final model and append to its metrics.jsonl. " +
                    (same_run ? "Restart this run with --resume auto, or pass" : "Pass") + " --overwrite to replace " +
                    (same_run ? "them" : "the run's outputs") +
                    " (files sft did not write stay), or choose another --output-dir");
}

void check_room_for_outputs(const std::string& dir, double checkpoint_bytes, double export_bytes) {
  std::string probe = dir.empty() ? "." : dir;
  while (!fs::exists(probe)) {
    const std::string up = fs::dirname(probe);
    probe = up.empty() || up == probe ? "." : up;
  }
  if (!fs::is_dir(probe))
    throw ConfigError("output_dir: " + dir + ": " + probe + " is a file, not a folder; choose another --output-dir");
  if (::access(probe.c_str(), W_OK | X_OK) != 0)
    throw ConfigError("output_dir: " + dir + ": " + (probe == dir ? "" : probe + " (where it would be made) ") +
                      "is not writable by this user; choose another --output-dir");
  struct statvfs st {};
  if (::statvfs(probe.c_str(), &st) != 0) return;  // a filesystem that does not say: nothing to check
  const double free = static_cast<double>(st.f_bavail) * static_cast<double>(st.f_frsize);
  const double need = checkpoint_bytes + export_bytes;
  auto gib = [](double b) {
    char s[32];
    std::snprintf(s, sizeof s, "%.1f GiB", b / (1024.0 * 1024 * 1024));
    return std::string(s);
  };
  if (free < need)
    throw ConfigError("output_dir: " + dir + ": its filesystem has " + gib(free) + " free; the run needs " + gib(need) +
                      " for one checkpoint (" + gib(checkpoint_bytes) + ") and one exported model (" +
                      gib(export_bytes) + "), more with train.keep_checkpoints > 1; free space or choose another --output-dir");
}

}  // namespace sft::train
