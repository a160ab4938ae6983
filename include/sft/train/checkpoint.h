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
//
// Tensors stream to their files one at a time: a CPU tensor from its own memory, a GPU's
// through a host staging buffer of at most `staging_bytes` (train.checkpoint_staging_mb),
// and each file's SHA-256 is taken as it is written. Every writing rank leaves a
// rank<r>.written.json with its files' sizes and digests; rank 0 builds the manifest from
// them, so nothing is read back. save_async() does the same in a background thread (the
// caller hands it host copies that later steps do not touch): the folder is completed by
// rank 0's thread once every rank's mark is there (the ranks share the folder), with no
// collective, so training goes on meanwhile.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
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

using TensorFiles = std::map<std::string, std::vector<std::pair<std::string, at::Tensor>>>;

class CheckpointStore {
 public:
  // <output_dir>/checkpoints
  explicit CheckpointStore(std::string root, std::size_t staging_bytes = std::size_t(1) << 30);
  ~CheckpointStore();  // waits for a background save (a failure is logged)

  // Writes tensors (by file) and the JSON state; returns the final folder. `files` maps a
  // file name (e.g. "state.safetensors") to its named tensors.
  std::string save(std::int64_t global_step, const TensorFiles& files, const nlohmann::json& state);

  // The same from every rank of a sharded run: each rank passes its own files; the folder
  // is completed (state, manifest, rename) by rank 0 once every rank has written.
  // `barrier` synchronises all ranks; `state` is used on rank 0 only.
  std::string save_sharded(std::int64_t global_step, int rank, const TensorFiles& files,
                           const nlohmann::json& state, const std::function<void()>& barrier);

  // The same in a background thread, from `writers` ranks (rank < writers), each handing
  // over host tensors that nothing else writes. Rank 0's thread completes the folder once
  // every writer's mark is there (waiting at most `timeout`), then keeps the newest `keep`.
  // REQUIRES: no background save in flight (wait_async()).
  void save_async(std::int64_t global_step, int rank, int writers, TensorFiles files, nlohmann::json state,
                  std::chrono::seconds timeout, std::int64_t keep);
  // Waits for the background save; rethrows its failure. The final folder, or "" if none ran.
  std::string wait_async();
  bool async_pending() const;

  // Checkpoints on disk, newest first (complete folders only; temporaries ignored).
  std::vector<CheckpointInfo> list() const;

  // Empty string when the checkpoint is intact, else the reason it is not.
  std::string verify(const std::string& dir) const;

  // The newest checkpoint that verifies; warns about each newer one that does not.
  std::optional<CheckpointInfo> latest_good() const;

  // Deletes all but the newest `keep` checkpoints.
  void prune(std::int64_t keep) const;
  // Removes the temporaries a crash left (step_N.tmp.*): never valid checkpoints. REQUIRES:
  // this process holds the run folder's lock (no save in flight). Returns their names.
  std::vector<std::string> remove_temporaries() const;

  const std::string& root() const { return root_; }

 private:
  // Writes this rank's files into `tmp` and its mark (rank<r>.written.json).
  void write_files(const std::string& tmp, int rank, const TensorFiles& files) const;
  // Rank 0: the state, the manifest from every writer's mark, then the rename.
  std::string complete(const std::string& tmp, std::int64_t global_step, int writers,
                       const nlohmann::json& state) const;
  std::string root_;
  std::size_t staging_bytes_;
  struct Async;
  std::unique_ptr<Async> async_;
};

nlohmann::json read_trainer_state(const std::string& checkpoint_dir);

}  // namespace sft::train
