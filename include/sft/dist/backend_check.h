// Which c10d backends this build of sft has: NCCL needs a CUDA build (SFT_CUDA), Gloo needs
// Gloo's headers at build time (SFT_GLOO, on by default; -DSFT_GLOO=OFF builds without them,
// NCCL only, for clusters whose only Gloo would be Debian's libgloo-dev).
#pragma once

#include "sft/config/choices.h"

namespace sft::dist {

bool gloo_compiled();
bool nccl_compiled();

// Throws ConfigError (exit code 2) when `resolved` (gloo or nccl, the backend a group of
// `world` ranks would use; `requested` is dist.backend, auto included) is not compiled into
// this build, saying what to use instead. `has_nccl` and `has_gloo` describe the build: the
// caller passes nccl_compiled() and gloo_compiled(), tests pass what they fake. Called
// before the rendezvous, so every rank stops at once with the same message.
void require_backend(config::Backend requested, config::Backend resolved, int world, bool has_nccl,
                     bool has_gloo);

}  // namespace sft::dist
