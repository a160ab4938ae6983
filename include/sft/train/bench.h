// `sft bench`: times one SFT training step exactly as ../shared/bench/reference_train.py
// does (same presets and flags, random tokens drawn once from a seeded generator, the
// first 30% of each sequence masked, AdamW lr 2e-5 betas (0.9, 0.95) with weight decay 0.1
// on matrices only, clipping at 1.0, bf16 autocast for --dtype bf16) and reports the same
// JSON fields with "impl": "sft", so the two can be compared in one run.
//
// With a strategy (--strategy ddp|zero1|zero2|zero3) the step is the trainer's data-parallel
// one over a process group: the launch's ranks (RANK/WORLD_SIZE, torchrun, Slurm), or a
// group of one rank whose collectives really run (Gloo on the CPU, NCCL on a GPU). Each
// rank draws its own batch; the JSON adds the communication per step (comm_ms, comm_wait_ms:
// medians over the timed steps). --profile PATH writes a trace of the timed steps
// (train/trace.h; rank R of several writes PATH.rank<R>).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace sft::train {

struct BenchOptions {
  std::string preset = "tiny";
  std::map<std::string, std::int64_t> overrides;  // dim layers heads kv-heads vocab ffn seq batch
  std::string dtype = "fp32";
  std::int64_t accum = 1, steps = 10, warmup = 2;
  int threads = 0;
  std::uint64_t seed = 0;
  std::optional<double> peak_gflops;
  bool activation_checkpointing = false;
  std::string device = "cpu";
  std::string strategy;               // "": one process, no group; ddp | zero1 | zero2 | zero3
  int prefetch = 1;                   // dist.prefetch
  std::string reduce_dtype = "fp32";  // dist.reduce_dtype
  std::string profile;                // a trace of the timed steps, to this path
};

nlohmann::ordered_json run_bench(const BenchOptions& o);

}  // namespace sft::train
