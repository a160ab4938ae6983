// The device a rank runs on, from train.device (or a --device flag) and what the rank sees:
// a pure function, so that the rule is tested with fake GPU counts and launch environments
// on a machine without a GPU. setup_device (trainer.h) fills the view from CUDA and the launch.
//
// The rule, for a rank that is local rank L of the node's W ranks (LOCAL_RANK and
// LOCAL_WORLD_SIZE, or SLURM_LOCALID and SLURM_NTASKS_PER_NODE) and sees G GPUs:
//   cpu     the CPU.
//   auto    cuda when G > 0, else the CPU (with a warning when a driver is there but unusable).
//   cuda    GPU L % G: each rank its own GPU, also when the launcher gives each rank one GPU
//           (G = 1). Refused when 1 < G < W (W as the launcher states it): ranks would share
//           a GPU, which NCCL refuses.
//   cuda:N  GPU N. Under a launch of several ranks per node (W > 1; W is at least L + 1)
//           only when N is this rank's own GPU (N = L % G): the config is the same on every
//           rank, so a fixed cuda:N would put every rank of the node on GPU N. A per-rank
//           override (--set train.device=cuda:$LOCAL_RANK) or one GPU per rank (cuda:0) passes.
// Errors are ConfigErrors naming train.device (exit code 2).
#pragma once

#include <c10/core/Device.h>

#include <string>

#include "sft/dist/launch.h"

namespace sft::train {

struct DeviceView {
  bool cuda_compiled = false;
  int gpus = 0;               // GPUs this process sees (after CUDA_VISIBLE_DEVICES)
  bool driver_found = false;  // an NVIDIA driver answered, whether or not it runs this LibTorch
  std::string no_gpu_reason;  // why gpus == 0 (cuda::unavailable_reason())
  int local_rank = 0;         // this rank's index on its node
  int local_world = 1;        // ranks on this node, as the launcher states it (1 when it does not)
  dist::Launcher launcher = dist::Launcher::kSingle;  // for messages
};

struct DeviceDecision {
  c10::Device device{c10::kCPU};
  std::string warning;  // non-empty: log it (auto fell back to the CPU although a driver is there)
};

// REQUIRES: nothing; throws ConfigError for a setting it cannot honour.
DeviceDecision choose_device(const std::string& setting, const DeviceView& view);

}  // namespace sft::train
