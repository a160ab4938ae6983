// train.device → the rank's device (device_rule.h).
#include "sft/train/device_rule.h"

#include <algorithm>

#include "sft/config/choices.h"
#include "sft/util/error.h"

namespace sft::train {
namespace {

// How the launcher named the rank's place on its node, for messages.
std::string local_rank_var(const DeviceView& v) {
  return v.launcher == dist::Launcher::kSlurm ? "SLURM_LOCALID" : "LOCAL_RANK";
}
std::string local_world_var(const DeviceView& v) {
  return v.launcher == dist::Launcher::kSlurm ? "SLURM_NTASKS_PER_NODE" : "LOCAL_WORLD_SIZE";
}

}  // namespace

DeviceDecision choose_device(const std::string& setting, const DeviceView& v) {
  const auto choice = config::parse_device(setting);
  if (!choice)
    throw ConfigError("device \"" + setting + "\" is not one sft runs on: cpu, cuda, cuda:N or auto");
  using config::DeviceChoice;
  DeviceDecision d;
  if (choice->kind == DeviceChoice::kCpu) return d;
  if (v.gpus <= 0) {
    const std::string why = v.cuda_compiled ? v.no_gpu_reason : "sft was built without CUDA (SFT_CUDA=OFF)";
    if (choice->kind == DeviceChoice::kAuto) {
      if (v.cuda_compiled && v.driver_found) d.warning = "train.device: auto runs on the CPU: " + why;
      return d;
    }
    throw ConfigError("train.device: " + setting + " requested but CUDA is not available (" + why + ")");
  }
  // A launcher may leave LOCAL_WORLD_SIZE unset (Slurm without --ntasks-per-node, plain env
  // variables): local rank L still proves at least L + 1 ranks on the node for cuda:N. The
  // GPU-sharing check counts only what the launcher stated (a plain-env LOCAL_RANK may be
  // the global RANK).
  const int local_world = std::max(v.local_world, v.local_rank + 1);
  const int own = v.local_rank % v.gpus;
  const std::string rank_here = local_rank_var(v) + "=" + std::to_string(v.local_rank);
  const std::string where =
      v.local_world >= local_world
          ? std::to_string(local_world) + " ranks on this node (" + local_world_var(v) + "=" +
                std::to_string(v.local_world) + ", " + rank_here + ")"
          : "at least " + std::to_string(local_world) + " ranks on this node (" + rank_here + ")";
  if (choice->index < 0) {
    if (v.gpus > 1 && v.gpus < v.local_world)
      throw ConfigError(
          "train.device: " + setting + ": " + where + " but " + std::to_string(v.gpus) +
          " GPUs visible, so ranks would share a GPU (NCCL refuses that); start one rank per GPU (torchrun "
          "--nproc_per_node=" +
          std::to_string(v.gpus) +
          ", or Slurm --ntasks-per-node equal to --gpus-per-node), or run on the CPU (train.device: cpu)");
    d.device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(own));
    return d;
  }
  if (choice->index >= v.gpus)
    throw ConfigError("train.device: " + setting + ": this process sees " + std::to_string(v.gpus) +
                      " GPU(s), cuda:0 to cuda:" + std::to_string(v.gpus - 1) +
                      "; check CUDA_VISIBLE_DEVICES");
  if (local_world > 1 && choice->index != own)
    throw ConfigError(
        "train.device: " + setting + " under " + where + " would put every rank of the node on GPU " +
        std::to_string(choice->index) +
        " (the config is the same on every rank); use train.device: cuda, which gives each rank GPU " +
        local_rank_var(v) + " (cuda:" + std::to_string(own) + " here), or name each rank's own GPU");
  d.device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(choice->index));
  return d;
}

}  // namespace sft::train
