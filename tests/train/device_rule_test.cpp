// The device each rank runs on (device_rule.h), with fake GPU counts and launch
// environments: the rule the CUDA paths follow, checked on a machine without a GPU.
#include "sft/train/device_rule.h"

#include <gtest/gtest.h>

#include <map>

#include "sft/train/trainer.h"
#include "sft/util/cuda.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft::train {
namespace {

// A rank of a torchrun launch: local rank `local` of `per_node`, seeing `gpus` GPUs.
DeviceView rank_view(int gpus, int local, int per_node, dist::Launcher launcher = dist::Launcher::kTorchrun) {
  DeviceView v;
  v.cuda_compiled = true;
  v.gpus = gpus;
  v.driver_found = gpus > 0;
  v.local_rank = local;
  v.local_world = per_node;
  v.launcher = launcher;
  return v;
}

std::string device_of(const std::string& setting, const DeviceView& v) {
  return choose_device(setting, v).device.str();
}

// The ConfigError's message, or "" when the setting is accepted.
std::string refusal(const std::string& setting, const DeviceView& v) {
  try {
    choose_device(setting, v);
    return "";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.exit_code(), 2);
    return e.what();
  }
}

TEST(DeviceRule, CudaGivesEachRankGpuLocalRank) {
  EXPECT_EQ(device_of("cuda", rank_view(8, 0, 1, dist::Launcher::kSingle)), "cuda:0");
  for (int local = 0; local < 8; ++local) {
    EXPECT_EQ(device_of("cuda", rank_view(8, local, 8)), "cuda:" + std::to_string(local));
    EXPECT_EQ(device_of("auto", rank_view(8, local, 8)), "cuda:" + std::to_string(local));
  }
  // A launcher that gives each rank its own GPU (CUDA_VISIBLE_DEVICES per task) leaves one.
  EXPECT_EQ(device_of("cuda", rank_view(1, 5, 8, dist::Launcher::kSlurm)), "cuda:0");
  EXPECT_EQ(device_of("cpu", rank_view(8, 3, 8)), "cpu");
}

TEST(DeviceRule, AFixedCudaNUnderSeveralRanksPerNodeIsRefused) {
  // The same config on 8 ranks of a node: cuda:3 would put all of them on GPU 3.
  for (int local : {0, 1, 7}) {
    const std::string why = refusal("cuda:3", rank_view(8, local, 8));
    EXPECT_NE(why.find("train.device: cuda:3 under 8 ranks on this node (LOCAL_WORLD_SIZE=8, LOCAL_RANK=" +
                       std::to_string(local) + ") would put every rank of the node on GPU 3"),
              std::string::npos)
        << why;
    EXPECT_NE(why.find("use train.device: cuda, which gives each rank GPU LOCAL_RANK (cuda:" +
                       std::to_string(local) + " here)"),
              std::string::npos)
        << why;
  }
  EXPECT_NE(refusal("cuda:0", rank_view(8, 2, 8, dist::Launcher::kSlurm))
                .find("(SLURM_NTASKS_PER_NODE=8, SLURM_LOCALID=2)"),
            std::string::npos);
  // A launcher that does not say how many ranks share the node: local rank 2 proves three.
  EXPECT_NE(refusal("cuda:0", rank_view(8, 2, 1, dist::Launcher::kSlurm))
                .find("at least 3 ranks on this node (SLURM_LOCALID=2)"),
            std::string::npos);
}

TEST(DeviceRule, ACudaNThatIsTheRanksOwnGpuIsAccepted) {
  EXPECT_EQ(device_of("cuda:3", rank_view(8, 3, 8)), "cuda:3");  // --set train.device=cuda:$LOCAL_RANK
  EXPECT_EQ(device_of("cuda:0", rank_view(1, 6, 8, dist::Launcher::kSlurm)), "cuda:0");  // one GPU per rank
  EXPECT_EQ(device_of("cuda:2", rank_view(4, 0, 1)), "cuda:2");  // one rank per node picks any GPU
  EXPECT_EQ(device_of("cuda:2", rank_view(4, 0, 1, dist::Launcher::kSingle)), "cuda:2");
}

TEST(DeviceRule, RanksThatWouldShareAGpuOrNameAMissingOneAreRefused) {
  const std::string share = refusal("cuda", rank_view(4, 5, 8));
  EXPECT_NE(
      share.find("8 ranks on this node (LOCAL_WORLD_SIZE=8, LOCAL_RANK=5) but 4 GPUs visible, so ranks would "
                 "share a GPU"),
      std::string::npos)
      << share;
  EXPECT_NE(refusal("auto", rank_view(2, 0, 4)).find("torchrun --nproc_per_node=2"), std::string::npos);
  // Plain RANK/WORLD_SIZE without LOCAL_WORLD_SIZE: LOCAL_RANK may be the global rank (9 on the
  // second node of 8 GPUs each); nothing stated, nothing refused.
  EXPECT_EQ(device_of("cuda", rank_view(8, 9, 1, dist::Launcher::kEnv)), "cuda:1");
  const std::string missing = refusal("cuda:4", rank_view(4, 0, 1, dist::Launcher::kSingle));
  EXPECT_NE(missing.find("train.device: cuda:4: this process sees 4 GPU(s), cuda:0 to cuda:3"),
            std::string::npos)
      << missing;
  EXPECT_NE(refusal("tpu", rank_view(1, 0, 1)).find("device \"tpu\" is not one sft runs on"),
            std::string::npos);
}

TEST(DeviceRule, WithoutAGpuCudaSaysWhyAndAutoRunsOnTheCpu) {
  DeviceView v = rank_view(0, 0, 1, dist::Launcher::kSingle);
  v.no_gpu_reason =
      "the NVIDIA driver 535.129.03 supports CUDA ≤ 12.2, this LibTorch was built for CUDA 13.0";
  v.driver_found = true;
  EXPECT_EQ(refusal("cuda", v),
            "train.device: cuda requested but CUDA is not available (" + v.no_gpu_reason + ")");
  EXPECT_NE(refusal("cuda:1", v).find(v.no_gpu_reason), std::string::npos);
  DeviceDecision d = choose_device("auto", v);
  EXPECT_TRUE(d.device.is_cpu());
  EXPECT_EQ(d.warning,
            "train.device: auto runs on the CPU: " + v.no_gpu_reason);  // a driver is there: say so
  v.driver_found = false;  // a laptop or a login node: the CPU is what was meant
  EXPECT_EQ(choose_device("auto", v).warning, "");
  v.cuda_compiled = false;
  EXPECT_NE(refusal("cuda", v).find("sft was built without CUDA (SFT_CUDA=OFF)"), std::string::npos);
}

// setup_device fills the view from this machine: without a GPU, a CUDA request names the
// reason CUDA gives (here: no driver at all).
TEST(DeviceRule, SetupDeviceNamesWhyThisMachineHasNoGpu) {
  if (cuda::available()) GTEST_SKIP() << "a GPU is visible";
  config::TrainSpec t;
  t.device = "cuda";
  t.threads = 1;
  std::string why;
  try {
    setup_device(t);
  } catch (const ConfigError& e) {
    why = e.what();
  }
  EXPECT_EQ(why,
            "train.device: cuda requested but CUDA is not available (" + cuda::unavailable_reason() + ")");
  if (cuda::compiled() && !fs::exists("/proc/driver/nvidia/version"))
    EXPECT_NE(why.find("no NVIDIA driver was found"), std::string::npos) << why;
  t.device = "auto";
  EXPECT_TRUE(setup_device(t).is_cpu());
}

}  // namespace
}  // namespace sft::train
