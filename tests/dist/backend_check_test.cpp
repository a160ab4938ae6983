// Which backends this build has (dist/backend_check.h): a build without Gloo (-DSFT_GLOO=OFF)
// stops a CPU run of several ranks, or dist.backend: gloo, with a ConfigError (exit code 2)
// before any rendezvous; the builds are faked through require_backend's arguments.
#include "sft/dist/backend_check.h"

#include <gtest/gtest.h>

#include "sft/util/error.h"

namespace sft::dist {
namespace {

using config::Backend;

std::string refusal(Backend requested, Backend resolved, int world, bool has_nccl, bool has_gloo) {
  try {
    require_backend(requested, resolved, world, has_nccl, has_gloo);
    return "";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.exit_code(), 2);
    return e.what();
  }
}

TEST(BackendCheck, ABuildWithoutGlooRefusesCpuRanksAndDistBackendGloo) {
  const std::string cpu_ranks =
      refusal(Backend::kAuto, Backend::kGloo, 2, /*has_nccl=*/true, /*has_gloo=*/false);
  EXPECT_EQ(
      cpu_ranks.rfind("dist.backend: auto picks Gloo for ranks on the CPU (2 ranks), but this sft was built "
                      "without Gloo (-DSFT_GLOO=OFF); run the ranks on GPUs (train.device: cuda, NCCL)",
                      0),
      0u)
      << cpu_ranks;
  const std::string named = refusal(Backend::kGloo, Backend::kGloo, 1, true, false);
  EXPECT_EQ(named.rfind(
                "dist.backend: gloo, but this sft was built without Gloo (-DSFT_GLOO=OFF); use dist.backend: "
                "nccl on GPUs",
                0),
            0u)
      << named;
  EXPECT_EQ(refusal(Backend::kAuto, Backend::kNccl, 16, true, false), "");  // GPU ranks need only NCCL
  EXPECT_EQ(refusal(Backend::kNccl, Backend::kNccl, 1, true, false), "");
}

TEST(BackendCheck, ABuildWithoutCudaRefusesNccl) {
  EXPECT_NE(refusal(Backend::kNccl, Backend::kNccl, 2, false, true)
                .find("dist.backend: nccl needs sft built against a "
                      "LibTorch with CUDA"),
            std::string::npos);
  EXPECT_EQ(refusal(Backend::kAuto, Backend::kGloo, 2, false, true), "");
}

TEST(BackendCheck, ThisBuildReportsWhatItWasCompiledWith) {
  EXPECT_EQ(gloo_compiled(), SFT_TEST_GLOO != 0);  // the build's SFT_GLOO
  EXPECT_EQ(nccl_compiled(), SFT_WITH_CUDA != 0);
}

}  // namespace
}  // namespace sft::dist
