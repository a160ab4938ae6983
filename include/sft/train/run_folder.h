// A run's output folder holds one run. A new run must not overwrite an earlier run's final
// model, append to its metrics.jsonl or mix its checkpoints with another's; a run that
// continues (--resume auto) or restarts itself may.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sft::train {

// What sft writes into a run folder (sft.lock aside): checkpoints/, final/, stage<N>_<name>/,
// eval/, tensorboard/, metrics.jsonl, config.resolved.json, data_manifest.json, eval.json.
bool is_run_output(const std::string& entry);

// Decides what a starting run may do with `dir` (its output folder, whose lock it holds;
// `config` is the run's resolved config, RunConfig::to_json()). Returns the entries of an
// earlier attempt to remove before the run writes anything:
//   - a folder without run outputs (empty, or only the user's own files, or a checkpoints/
//     holding only a crash's temporaries, which the trainer prunes): nothing;
//   - `resume` with checkpoints: nothing (Trainer::check_resume compares the settings);
//   - `resume`, no checkpoint, and the folder's config.resolved.json holds this very config:
//     the run starts over, so its stale outputs go;
//   - `overwrite`: the earlier run's outputs go (files sft did not write stay);
//   - otherwise (another run's outputs, or this run's without --resume auto): ConfigError
//     naming what is there and the ways on (exit code 2).
std::vector<std::string> outputs_to_replace(const std::string& dir, const nlohmann::json& config,
                                            bool has_checkpoints, bool resume, bool overwrite);

// Before anything is trained, what the run's end needs of its folder: that `dir` (or the
// nearest folder above it that exists, where it will be made) can be written, and that its
// filesystem has room for `checkpoint_bytes` (one checkpoint of every rank, as planned) and
// `export_bytes` (one exported model). ConfigError naming the folder, the free and the needed
// bytes (exit code 2); nothing is created.
void check_room_for_outputs(const std::string& dir, double checkpoint_bytes, double export_bytes);

}  // namespace sft::train
