// The closed choices as enums: the config's, the analysis plan's (sft sweep report --plan,
// src/sweep/plan.h), and the few the CLI and the evaluator take (benchmarks, --dtype). Each is parsed once,
// against the names below (parse_choice), so no other module compares strings; name() gives the name back for
// logs, JSON and checkpoints (the same text the YAML holds).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sft::config {

enum class Precision { kFp32, kBf16, kBf16Pure };                              // train.precision
enum class Schedule { kCosine, kLinear, kConstant };                           // train.schedule and per stage
enum class Batching { kPack, kPad, kPadMax };                                  // data.batching
enum class Truncation { kTruncate, kDrop };                                    // data.truncation
enum class OnBadRecord { kError, kSkip };                                      // data.on_bad_record
enum class SaveDtype { kFp32, kBf16, kF16 };                                   // model.save_dtype
enum class ModelInit { kAuto, kRandom, kPretrained };                          // model.init
enum class DistStrategy { kDdp, kZero1, kZero2, kZero3 };                      // dist.strategy
enum class Backend { kAuto, kGloo, kNccl };                                    // dist.backend
enum class GatherDtype { kAuto, kFp32 };                                       // dist.gather_dtype
enum class ReduceDtype { kFp32, kBf16 };                                       // dist.reduce_dtype
enum class Format { kGsm8k, kAlpaca, kSharegpt, kMessages, kText, kMtbench };  // datasets.<name>.format
// strategy.name: the four presets of Dong et al. (2024); kCustom: stages written out (not a name
// strategy.name takes).
enum class Strategy { kMultiTask, kSequential, kMixedSequential, kDmt, kCustom };
// eval.benchmarks[i].name and sft eval --benchmark (eval/evaluator.h); checked by the evaluator,
// since only an evaluation needs one.
enum class Benchmark { kGsm8k, kHumaneval, kMtbench, kMath, kCode, kGeneral };
// The --dtype of sft bench, score, generate and eval: what the model computes in.
enum class ComputeDtype { kFp32, kBf16 };
// template.name; kAuto: the built-in whose rendering the tokenizer folder's chat template
// has (data/chat_template.h), resolved where the tokenizer is loaded.
enum class Template {
  kVicunaV11,
  kLlama2,
  kChatml,
  kAlpaca,
  kRaw,
  kLlama3,
  kLlama31,
  kQwen25,
  kQwen3,
  kAuto
};
// The analysis plan (configs/repro/analysis_plan.yaml): claims[i].rows[j].test, .a and .b (the
// run sets a difference compares: one ability alone, all mixed in one stage, or a strategy's
// preset at full data), .side (of the threshold), and claims[i].combine.
enum class PlanTest { kDifference, kLogLinear, kSaturation };
enum class RunSet { kAlone, kMixed, kMultiTask, kSequential, kMixedSequential, kDmt };
enum class Side { kAbove, kBelow };
enum class Combine { kAll };  // the claim's verdict is all its rows'

template <class E>
struct Choice {
  E value;
  std::string_view name;
};

// Choices<E>::all: every value of E with its config name, in the order the docs list them.
template <class E>
struct Choices;

// The name of v, at compile time too (a table may take another's names).
template <class E>
constexpr std::string_view choice_name(E v) {
  for (const auto& c : Choices<E>::all)
    if (c.value == v) return c.name;
  return "?";
}

#define SFT_CHOICES(E, ...)                           \
  template <>                                         \
  struct Choices<E> {                                 \
    static constexpr Choice<E> all[] = {__VA_ARGS__}; \
  }
SFT_CHOICES(Precision, {Precision::kFp32, "fp32"}, {Precision::kBf16, "bf16"},
            {Precision::kBf16Pure, "bf16-pure"});
SFT_CHOICES(Schedule, {Schedule::kCosine, "cosine"}, {Schedule::kLinear, "linear"},
            {Schedule::kConstant, "constant"});
SFT_CHOICES(Batching, {Batching::kPack, "pack"}, {Batching::kPad, "pad"}, {Batching::kPadMax, "pad_max"});
SFT_CHOICES(Truncation, {Truncation::kTruncate, "truncate"}, {Truncation::kDrop, "drop"});
SFT_CHOICES(OnBadRecord, {OnBadRecord::kError, "error"}, {OnBadRecord::kSkip, "skip"});
SFT_CHOICES(SaveDtype, {SaveDtype::kFp32, "fp32"}, {SaveDtype::kBf16, "bf16"}, {SaveDtype::kF16, "f16"});
SFT_CHOICES(ModelInit, {ModelInit::kAuto, "auto"}, {ModelInit::kRandom, "random"},
            {ModelInit::kPretrained, "pretrained"});
SFT_CHOICES(DistStrategy, {DistStrategy::kDdp, "ddp"}, {DistStrategy::kZero1, "zero1"},
            {DistStrategy::kZero2, "zero2"}, {DistStrategy::kZero3, "zero3"});
SFT_CHOICES(Backend, {Backend::kAuto, "auto"}, {Backend::kGloo, "gloo"}, {Backend::kNccl, "nccl"});
SFT_CHOICES(GatherDtype, {GatherDtype::kAuto, "auto"}, {GatherDtype::kFp32, "fp32"});
SFT_CHOICES(ReduceDtype, {ReduceDtype::kFp32, "fp32"}, {ReduceDtype::kBf16, "bf16"});
SFT_CHOICES(Format, {Format::kGsm8k, "gsm8k"}, {Format::kAlpaca, "alpaca"}, {Format::kSharegpt, "sharegpt"},
            {Format::kMessages, "messages"}, {Format::kText, "text"}, {Format::kMtbench, "mtbench"});
SFT_CHOICES(Strategy, {Strategy::kMultiTask, "multi_task"}, {Strategy::kSequential, "sequential"},
            {Strategy::kMixedSequential, "mixed_sequential"}, {Strategy::kDmt, "dmt"},
            {Strategy::kCustom, "custom"});
SFT_CHOICES(Benchmark, {Benchmark::kGsm8k, "gsm8k"}, {Benchmark::kHumaneval, "humaneval"},
            {Benchmark::kMtbench, "mtbench"}, {Benchmark::kMath, "math"}, {Benchmark::kCode, "code"},
            {Benchmark::kGeneral, "general"});
SFT_CHOICES(ComputeDtype, {ComputeDtype::kFp32, "fp32"}, {ComputeDtype::kBf16, "bf16"});
SFT_CHOICES(Template, {Template::kVicunaV11, "vicuna_v1.1"}, {Template::kLlama2, "llama-2"},
            {Template::kChatml, "chatml"}, {Template::kAlpaca, "alpaca"}, {Template::kRaw, "raw"},
            {Template::kLlama3, "llama-3"}, {Template::kLlama31, "llama-3.1"}, {Template::kQwen25, "qwen2.5"},
            {Template::kQwen3, "qwen3"}, {Template::kAuto, "auto"});
SFT_CHOICES(PlanTest, {PlanTest::kDifference, "difference"}, {PlanTest::kLogLinear, "log_linear"},
            {PlanTest::kSaturation, "saturation"});
// A strategy's run set has the strategy's name.
SFT_CHOICES(RunSet, {RunSet::kAlone, "alone"}, {RunSet::kMixed, "mixed"},
            {RunSet::kMultiTask, choice_name(Strategy::kMultiTask)},
            {RunSet::kSequential, choice_name(Strategy::kSequential)},
            {RunSet::kMixedSequential, choice_name(Strategy::kMixedSequential)},
            {RunSet::kDmt, choice_name(Strategy::kDmt)});
SFT_CHOICES(Side, {Side::kAbove, "above"}, {Side::kBelow, "below"});
SFT_CHOICES(Combine, {Combine::kAll, "all"});
#undef SFT_CHOICES

// train.device, and the --device flags of sft bench, score, generate and eval: an open
// choice (cuda:N names any GPU), parsed here once.
struct DeviceChoice {
  enum Kind { kAuto, kCpu, kCuda } kind = kAuto;  // auto: the rank's GPU when there is one, else the CPU
  int index = -1;                                 // cuda:N; -1: the rank's (LOCAL_RANK)
};
// auto | cpu | cuda | cuda:N; nullopt otherwise.
inline std::optional<DeviceChoice> parse_device(std::string_view text) {
  if (text == "auto") return DeviceChoice{DeviceChoice::kAuto, -1};
  if (text == "cpu") return DeviceChoice{DeviceChoice::kCpu, -1};
  if (text == "cuda") return DeviceChoice{DeviceChoice::kCuda, -1};
  if (text.substr(0, 5) != "cuda:" || text.size() == 5 || text.size() > 9) return std::nullopt;
  int index = 0;
  for (char c : text.substr(5)) {
    if (c < '0' || c > '9') return std::nullopt;
    index = index * 10 + (c - '0');
  }
  return DeviceChoice{DeviceChoice::kCuda, index};
}

template <class E>
std::string name(E v) {
  return std::string(choice_name(v));
}

template <class E>
std::optional<E> parse_choice(std::string_view text) {
  for (const auto& c : Choices<E>::all)
    if (c.name == text) return c.value;
  return std::nullopt;
}

// JSON holds a choice by its name (nlohmann's to_json hook, found by argument lookup), never
// by the enum's number.
template <class Json, class E, class = decltype(Choices<E>::all)>
void to_json(Json& j, E v) {
  j = name(v);
}

// Every name, in order: for a CLI flag's set of allowed values (CLI::IsMember).
template <class E>
std::vector<std::string> choice_names() {
  std::vector<std::string> out;
  for (const auto& c : Choices<E>::all) out.emplace_back(c.name);
  return out;
}

// "fp32, bf16, bf16-pure": for messages and the key reference.
template <class E>
std::string choice_list() {
  std::string s;
  for (const auto& c : Choices<E>::all) s += (s.empty() ? "" : ", ") + std::string(c.name);
  return s;
}

}  // namespace sft::config
