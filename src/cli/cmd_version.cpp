// sft version: sft's and LibTorch's versions, whether CUDA is compiled in and usable (and why
// not), whether Gloo is compiled in, threads.
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "sft/dist/backend_check.h"
#include "sft/util/cuda.h"

namespace sft::cli {

std::vector<Command> register_version(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("version", "print sft's version, the LibTorch version, its CUDA, and threads");
  static bool as_json = false;
  cmd->add_flag("--json", as_json, "print one JSON object");
  return {
      {cmd, [] {
         const bool compiled = cuda::compiled();
         const int devices = cuda::device_count();
         const std::string cuda_version = cuda::runtime_version();
         nlohmann::json j = {{"sft", SFT_VERSION},
                             {"libtorch", TORCH_VERSION},
                             {"cuda_compiled", compiled},
                             {"cuda_version", cuda_version},
                             {"cuda_available", devices > 0},
                             {"cuda_devices", devices},
                             {"gloo_compiled", dist::gloo_compiled()},
                             {"threads", at::get_num_threads()},
                             {"attention", "scaled_dot_product_attention"},
                             // Kept for readers of the 1.13-era output: SDPA is always used now,
                             // and sentencepiece is linked in rather than loaded as a plugin.
                             {"sdpa", true},
                             {"sentencepiece_plugin", "none (sentencepiece is linked in)"}};
         if (devices > 0) j["cuda_device_name"] = cuda::device_name(0);
         if (compiled && devices == 0) j["cuda_unavailable"] = cuda::unavailable_reason();
         if (as_json) {
           std::cout << j.dump() << "\n";
           return 0;
         }
         std::cout << "sft " << SFT_VERSION << "\n"
                   << "libtorch " << TORCH_VERSION << "\n"
                   << "cuda "
                   << (compiled ? "compiled in (CUDA " + cuda_version + ")" : std::string("not compiled in"))
                   << ", "
                   << (devices > 0 ? std::to_string(devices) + " device(s): " + cuda::device_name(0)
                                   : std::string("no device available"))
                   << (compiled && devices == 0 ? ": " + cuda::unavailable_reason() : std::string()) << "\n"
                   << "gloo " << (dist::gloo_compiled() ? "compiled in" : "not compiled in (SFT_GLOO=OFF)")
                   << "\n"
                   << "threads " << at::get_num_threads() << "\n"
                   << "attention scaled_dot_product_attention\n";
         return 0;
       }}};
}

}  // namespace sft::cli
