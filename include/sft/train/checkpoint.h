// Training checkpoints: everything needed to continue a run bit-for-bit.
//
// A checkpoint is a folder <output_dir>/checkpoints/step_<global step, 8 digits>/ holding
//   state.safetensors     flat fp32 parameters and AdamW moments (this rank's shard under
//                         ZeRO: rank<r>.safetensors, one per rank)
//   trainer_state.json    counters (global step, stage, step in stage, optimizer steps,
//                         skipped steps), the data stream's state and fingerprint, RNG
//                         state, world size and the resolved config
//   manifest.json         SHA-256 and size of every other file; written last
// It is written to a temporary folder, fsynced, then renamed into place, so a crash leaves
// either the complete folder or none. Loading verifies the manifest; a truncated or
// corrupt checkpoint is skipped (with a warning) in favour of the previous good one.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sft::train {

struct CheckpointInfo {
  std::string dir;
  std::int64_t global_step = 0;
};

class CheckpointStore {
 public:
  explicit CheckpointStore(std::string root);  // <output_dir>/checkpoints

  // Writes tensors (by file) and the JSON state; returns the final folder. `files` maps a
  // file name (e.g. "state.safetensors") to its named tensors.
  std::string save(std::int64_t global_step,
                   const std::map<std::string, std::vector<std::pair<std::string, at::Tensor>>>& files,
                   const nlohmann::json& state);

  // The same from every rank of a sharded run: each rank passes its own files; the folder
  // is completed (state, manifest, rename) by rank 0 once every rank has written.
  // `barrier` synchronises all ranks; `state` is used on rank 0 only.
  std::string save_sharded(std::int64_t global_step, int rank,
                           const std::map<std::string, std::vector<std::pair<std::string, at::Tensor>>>& files,
                           const nlohmann::json& state, const std::function<void()>& barrier);

  // Checkpoints on disk, newest first (complete folders only; temporaries ignored).
  std::vector<CheckpointInfo> list() const;

  // Empty string when the checkpoint is intact, else the reason it is not.
  std::string verify(const std::string& dir) const;

  // The newest checkpoint that verifies; warns about each newer one that does not.
  std::optional<CheckpointInfo> latest_good() const;

  // Deletes all but the newest `keep` checkpoints.
  void prune(std::int64_t keep) const;
  // Removes the temporaries a crash left (step_N.tmp.PID, step_N.tmp.sharded): never valid
  // checkpoints. REQUIRES: this process holds the run folder's lock (no save in flight).
  // Returns the removed folders' names.
  std::vector<std::string> remove_temporaries() const;

  const std::string& root() const { return root_; }

 private:
  std::string root_;
};

nlohmann::json read_trainer_state(const std::string& checkpoint_dir);

}  // namespace sft::train
