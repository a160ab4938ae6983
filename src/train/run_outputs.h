// What a run records of its output folder (run_folder.h): the entries it created, which a
// later --overwrite may remove (and nothing else), and the folder checked before any input
// is read. Private to src/train (and its tests), so that trainer.h stays as it is.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "sft/config/run_config.h"
#include "sft/dist/context.h"

namespace sft::train {

// The folder stage `index` (0-based) exports its model to: "stage<index+1>_<name>".
std::string stage_output_name(std::size_t index, const std::string& name);

// The record of a run's own outputs, <dir>/sft_outputs.json: {"outputs": [entry, ...]}.
// outputs_to_replace (run_folder.h) removes under --overwrite (or a restart) only the entries
// it records, and refuses (ConfigError, exit code 2, nothing removed) a folder holding run
// outputs that no record names: the user's look-alikes (an eval/ of their own) or a run of
// an sft older than the record.
inline constexpr const char* kOutputsRecord = "sft_outputs.json";

// Called by a starting run under the folder's lock, once the earlier outputs to replace are
// gone: records as the run's own what was recorded before (a resumed run's) and every entry
// the run may write (is_run_output's names, with `stage_dirs`) that does not exist yet. A
// file or folder the user made before the run is never recorded, so never removed.
void record_outputs(const std::string& dir, const std::vector<std::string>& stage_dirs);

// Before any input is read, nothing written: rank 0 checks that the run's output folder can
// be written, has room for a checkpoint and an export, and holds no other run's outputs
// (unless in use: the lock reports that, later). A refusal stops every rank.
void check_run_folder(const config::RunConfig& cfg, bool resume, bool overwrite, dist::Context& dist,
                      int rank);

}  // namespace sft::train
