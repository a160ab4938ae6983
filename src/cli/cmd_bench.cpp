// sft bench: the SFT training step of ../shared/bench/reference_train.py, timed in C++.
#include <iostream>

#include "cli/commands.h"
#include "sft/config/choices.h"
#include "sft/train/bench.h"

namespace sft::cli {

std::vector<Command> register_bench(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench",
                                 "time one SFT training step like ../shared/bench/reference_train.py "
                                 "(same presets, flags and JSON fields, \"impl\": \"sft\")");
  static train::BenchOptions o;
  static bool json = false;
  static std::int64_t dim = 0, layers = 0, heads = 0, kv = 0, vocab = 0, ffn = 0, seq = 0, batch = 0;
  static double peak = 0;
  cmd->add_option("--preset", o.preset,
                  "tiny | small | gqa (reference_train.py's) | 1b (TinyLlama-1.1B shape, for GPUs)")
      ->check(CLI::IsMember({"tiny", "small", "gqa", "1b"}));
  cmd->add_option("--dim", dim, "override the preset's value");
  cmd->add_option("--layers", layers, "override the preset's value");
  cmd->add_option("--heads", heads, "override the preset's value");
  cmd->add_option("--kv-heads", kv, "override the preset's value");
  cmd->add_option("--vocab", vocab, "override the preset's value");
  cmd->add_option("--ffn", ffn, "override the preset's value");
  cmd->add_option("--seq", seq, "override the preset's value")->check(in_range(1, 1 << 20));
  cmd->add_option("--batch", batch, "override the preset's value")->check(in_range(1, 1 << 16));
  cmd->add_option("--dtype", o.dtype, "fp32 | bf16 (autocast)")
      ->check(CLI::IsMember(config::choice_names<config::ComputeDtype>()));
  cmd->add_option("--accum", o.accum, "micro-batches per optimizer step")->check(in_range(1, 1 << 16));
  cmd->add_option("--steps", o.steps, "timed steps")->check(in_range(1, 1e6));
  cmd->add_option("--warmup", o.warmup, "untimed steps before timing")->check(in_range(0, 1e6));
  cmd->add_option("--threads", o.threads, "intra-op threads (default: all usable cores)")
      ->check(in_range(0, 4096));
  cmd->add_option("--seed", o.seed, "seed of the random batch and the weights");
  cmd->add_option("--peak-gflops", peak, "matmul ceiling (matmul_peak.py) to report a fraction of");
  cmd->add_flag("--activation-checkpointing", o.activation_checkpointing, "recompute each layer in backward");
  cmd->add_option("--device", o.device, "cpu | cuda | cuda:N");
  cmd->add_option(
         "--strategy", o.strategy,
         "ddp | zero1 | zero2 | zero3: the trainer's data-parallel step over a process group (the launch's "
         "ranks, or one rank)")
      ->check(CLI::IsMember({"ddp", "zero1", "zero2", "zero3"}));
  cmd->add_option("--prefetch", o.prefetch, "with --strategy zero3: units gathered ahead (dist.prefetch)")
      ->check(in_range(0, 64));
  cmd->add_option("--reduce-dtype", o.reduce_dtype, "with --strategy: fp32 | bf16 (dist.reduce_dtype)")
      ->check(CLI::IsMember(config::choice_names<config::ComputeDtype>()));
  cmd->add_option("--profile", o.profile,
                  "write a trace of the timed steps (Perfetto / chrome://tracing JSON) here");
  cmd->add_flag("--json", json, "print only the JSON line on stdout (it is always the last line)");
  return {{cmd, [] {
             for (auto [k, v] :
                  std::initializer_list<std::pair<const char*, std::int64_t>>{{"dim", dim},
                                                                              {"layers", layers},
                                                                              {"heads", heads},
                                                                              {"kv-heads", kv},
                                                                              {"vocab", vocab},
                                                                              {"ffn", ffn},
                                                                              {"seq", seq},
                                                                              {"batch", batch}})
               if (v > 0) o.overrides[k] = v;
             if (peak > 0) o.peak_gflops = peak;
             std::cout << train::run_bench(o).dump() << "\n";
             return 0;
           }}};
}

}  // namespace sft::cli
