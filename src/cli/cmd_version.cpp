// sft version: sft's and LibTorch's versions, CUDA availability, threads, plugin path.
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "sft/data/tokenizer.h"
#include "sft/model/llama.h"

namespace sft::cli {

std::vector<Command> register_version(CLI::App& app) {
  auto* cmd = app.add_subcommand("version", "print sft's version, the LibTorch version, CUDA availability and threads");
  static bool as_json = false;
  cmd->add_flag("--json", as_json, "print one JSON object");
  return {{cmd, [] {
             bool cuda = torch::cuda::is_available();
             nlohmann::json j = {{"sft", SFT_VERSION},
                                 {"libtorch", TORCH_VERSION},
                                 {"cuda_available", cuda},
                                 {"cuda_devices", cuda ? torch::cuda::device_count() : 0},
                                 {"threads", at::get_num_threads()},
                                 {"sdpa", model::Llama::sdpa_available()},
                                 {"sentencepiece_plugin", data::spm_plugin_path()}};
             if (as_json) {
               std::cout << j.dump() << "\n";
             } else {
               std::cout << "sft " << SFT_VERSION << "\n"
                         << "libtorch " << TORCH_VERSION << "\n"
                         << "cuda " << (cuda ? "available (" + std::to_string(torch::cuda::device_count()) + " devices)" : std::string("not available")) << "\n"
                         << "threads " << at::get_num_threads() << "\n"
                         << "attention " << (model::Llama::sdpa_available() ? "scaled_dot_product_attention" : "explicit (LibTorch < 2.0)") << "\n"
                         << "sentencepiece plugin " << data::spm_plugin_path() << "\n";
             }
             return 0;
           }}};
}

}  // namespace sft::cli
