// The backends compiled into this build (backend_check.h).
#include "sft/dist/backend_check.h"

#include <string>

#include "sft/util/error.h"

namespace sft::dist {

bool gloo_compiled() { return SFT_WITH_GLOO != 0; }
bool nccl_compiled() { return SFT_WITH_CUDA != 0; }

void require_backend(config::Backend requested, config::Backend resolved, int world, bool has_nccl,
                     bool has_gloo) {
  const bool automatic = requested == config::Backend::kAuto;
  if (resolved == config::Backend::kGloo && !has_gloo) {
    if (automatic)
      throw ConfigError(
          "dist.backend: auto picks Gloo for ranks on the CPU (" + std::to_string(world) +
          " ranks), but this sft was built without Gloo (-DSFT_GLOO=OFF); run the ranks on GPUs "
          "(train.device: cuda, NCCL), run one process, or rebuild with Gloo's headers (-DSFT_GLOO=ON: "
          "Debian's libgloo-dev, or GLOO_ROOT)");
    throw ConfigError(
        "dist.backend: gloo, but this sft was built without Gloo (-DSFT_GLOO=OFF); use dist.backend: nccl "
        "on GPUs, or rebuild with Gloo's headers (-DSFT_GLOO=ON: Debian's libgloo-dev, or GLOO_ROOT)");
  }
  if (resolved == config::Backend::kNccl && !has_nccl)
    throw ConfigError(
        "dist.backend: nccl needs sft built against a LibTorch with CUDA (SFT_CUDA=ON); this build has none" +
        std::string(has_gloo ? " (use gloo)" : ""));
}

}  // namespace sft::dist
