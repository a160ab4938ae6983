#include "sft/train/run_folder.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <optional>
#include <set>
#include <algorithm>

#include "sft/util/error.h"
#include "train/run_outputs.h"
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

// The entries <dir>/sft_outputs.json records (plain names: nothing outside `dir`), or
// nullopt when there is no readable record.
std::optional<std::vector<std::string>> recorded(const std::string& dir) {
  const std::string path = fs::join(dir, kOutputsRecord);
  if (!fs::exists(path)) return std::nullopt;
  try {
    std::vector<std::string> out;
    const nlohmann::json record = nlohmann::json::parse(fs::read_file(path));  // kept alive through the loop
    for (const auto& e : record.at("outputs")) {
      const std::string n = e.get<std::string>();
      if (!n.empty() && n != "." && n != ".." && n.find('/') == std::string::npos && is_run_output(n))
        out.push_back(n);
    }
    return out;
  } catch (const std::exception&) {
    return std::nullopt;
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
  static const char* const kNames[] = {"checkpoints",        "final",         "eval",
                                       "tensorboard",        "metrics.jsonl", "config.resolved.json",
                                       "data_manifest.json", "eval.json",     kOutputsRecord};
  for (const char* n : kNames)
    if (entry == n) return true;
  // stage<N>_<name>: the model exported at the end of stage N.
  if (entry.rfind("stage", 0) != 0) return false;
  std::size_t i = 5;
  while (i < entry.size() && std::isdigit(static_cast<unsigned char>(entry[i]))) ++i;
  return i > 5 && i + 1 < entry.size() && entry[i] == '_';
}

std::string stage_output_name(std::size_t index, const std::string& name) {
  return "stage" + std::to_string(index + 1) + "_" + name;
}

void record_outputs(const std::string& dir, const std::vector<std::string>& stage_dirs) {
  std::set<std::string> own;
  if (auto was = recorded(dir)) own.insert(was->begin(), was->end());
  std::vector<std::string> planned = {"checkpoints",        "final",         "eval",
                                      "tensorboard",        "metrics.jsonl", "config.resolved.json",
                                      "data_manifest.json", "eval.json",     kOutputsRecord};
  planned.insert(planned.end(), stage_dirs.begin(), stage_dirs.end());
  for (const auto& p : planned)
    if (!fs::exists(fs::join(dir, p))) own.insert(p);  // the user's own stays theirs
  own.insert(kOutputsRecord);
  fs::write_file_atomic(fs::join(dir, kOutputsRecord), nlohmann::json{{"outputs", own}}.dump(1) + "\n");
}

std::vector<std::string> outputs_to_replace(const std::string& dir, const nlohmann::json& config,
                                            bool has_checkpoints, bool resume, bool overwrite) {
  if (resume && has_checkpoints) return {};
  const auto own = recorded(dir);
  std::vector<std::string> outputs;
  for (const auto& e : fs::list_dir(dir))
    if (is_run_output(e) && e != kOutputsRecord &&
        (e != "checkpoints" || has_checkpoints))  // crash temporaries only: pruned at start
      outputs.push_back(e);
  if (outputs.empty()) return {};  // files of the user's own (a config, notes) are not damaged by a run
  const bool same_run = records_this_run(dir, config);
  if (overwrite || (resume && same_run)) {
    // Only what an earlier run recorded as its own goes; the user's look-alikes stay.
    std::vector<std::string> mine, theirs;
    for (const auto& e : outputs)
      (own && std::find(own->begin(), own->end(), e) != own->end() ? mine : theirs).push_back(e);
    if (!theirs.empty())
      throw ConfigError(
          dir + ": holds " + listing(dir, theirs) + ", which " +
          (own ? std::string("its ") + kOutputsRecord + " does not record"
               : std::string("no ") + kOutputsRecord + " records") +
          " as an earlier sft run's outputs (files of your own, or a run of an older sft); sft removes "
          "nothing it did not write: move them away, or choose another --output-dir");
    if (own && fs::exists(fs::join(dir, kOutputsRecord))) mine.push_back(kOutputsRecord);
    return mine;
  }
  if (has_checkpoints)
    throw ConfigError(
        dir +
        ": holds checkpoints of an earlier run; continue it with --resume auto, replace it with "
        "--overwrite, or choose another --output-dir");
  std::string what = same_run ? "the outputs of an earlier attempt at this run"
                     : fs::exists(fs::join(dir, "config.resolved.json"))
                         ? "the outputs of another run (its config.resolved.json differs from this config)"
                         : "the outputs of another run";
  throw ConfigError(dir + ": holds " + what + " (" + listing(dir, outputs) +
                    "); a new run there would overwrite its final model and append to its metrics.jsonl. " +
                    (same_run ? "Restart this run with --resume auto, or pass" : "Pass") +
                    " --overwrite to replace " + (same_run ? "them" : "the run's outputs") +
                    " (files sft did not write stay), or choose another --output-dir");
}

void check_room_for_outputs(const std::string& dir, double checkpoint_bytes, double export_bytes) {
  std::string probe = dir.empty() ? "." : dir;
  while (!fs::exists(probe)) {
    const std::string up = fs::dirname(probe);
    probe = up.empty() || up == probe ? "." : up;
  }
  if (!fs::is_dir(probe))
    throw ConfigError("output_dir: " + dir + ": " + probe +
                      " is a file, not a folder; choose another --output-dir");
  if (::access(probe.c_str(), W_OK | X_OK) != 0)
    throw ConfigError("output_dir: " + dir + ": " +
                      (probe == dir ? "" : probe + " (where it would be made) ") +
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
    throw ConfigError("output_dir: " + dir + ": its filesystem has " + gib(free) + " free; the run needs " +
                      gib(need) + " for one checkpoint (" + gib(checkpoint_bytes) +
                      ") and one exported model (" + gib(export_bytes) +
                      "), more with train.keep_checkpoints > 1; free space or choose another --output-dir");
}

}  // namespace sft::train
