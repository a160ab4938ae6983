// RunConfig: one training run, resolved from a YAML file plus `--set key.path=value`
// overrides. This module is the only code that sees YAML nodes.
//
// Loading collects every problem before failing: load_run_config throws one ConfigError
// whose message lists them all, each as "file:line: key.path: what is wrong".
// The four strategies of Dong et al. (2024) are expanded here into explicit stages, so
// every later module sees only `stages`; record counts are applied by the data module.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sft/config/choices.h"

namespace sft::config {

const char* strategy_name(Strategy s);  // name(s), as a C string

struct DatasetSpec {
  std::string name;
  std::string path;
  Format format = Format::kMessages;
  std::string ability;              // "general" marks general chat data; anything else is specialised
  double fraction = 1.0;            // data-scaling fraction: the first round(f*N) of the seeded permutation
  bool strip_calculator = false;    // gsm8k: drop <<a+b=c>> annotations
  std::string filter_field;         // keep records whose filter_field == filter_equals
  nlohmann::json filter_equals;     // (null when no filter)
  std::string text_field = "text";  // text format: the field holding the text (jsonl)
  std::int64_t size = -1;           // expected record count, for planning without files
  // Upsampling: each selected record appears `repeat` times per stage epoch, wherever the
  // dataset is trained on (the mixing-ratio knob; a small general set is seen more often).
  int repeat = 1;
  std::optional<std::string> system_message;  // overrides the template's default system message

  bool is_general() const { return ability == "general"; }
};

struct StageSource {
  std::string dataset;
  // The source's share of the dataset's selection (the round(f*N) records DatasetSpec::fraction
  // selects): YAML stages[i].sources.<dataset>.fraction, or stages[i].replay_fraction /
  // strategy.k for a replay source. Named apart from DatasetSpec::fraction, which it multiplies.
  double share = 1.0;
  bool replay = false;            // added by DMT / replay_fraction: replay of earlier-stage data
  std::size_t dataset_index = 0;  // of `dataset` in RunConfig::datasets (set once resolved)
};

// Hyper-parameters a stage may override: train.* holds the run's, each stage starts from
// them and strategy.stage_overrides / stages[i] may change them.
struct StageHparams {
  int epochs = 1;
  // > 0: the stage runs more epochs than `epochs` when it needs them to reach this many
  // optimizer steps (a small data share still gets a real optimisation, as the paper's 3
  // epochs of a few hundred samples do).
  std::int64_t min_steps = 0;
  double lr = 2e-5;
  double min_lr_ratio = 0.0;
  Schedule schedule = Schedule::kCosine;
  double warmup_ratio = 0.03;
  std::int64_t warmup_steps = -1;  // >= 0 takes precedence over warmup_ratio
};

struct StageSpec : StageHparams {
  std::string name;
  std::vector<StageSource> sources;
};

struct ModelSpec {
  std::string path;  // Hugging Face folder (config.json, safetensors); may be empty
  ModelInit init = ModelInit::kAuto;
  nlohmann::json config;                    // config.json fields, merged over path/config.json
  SaveDtype save_dtype = SaveDtype::kFp32;  // dtype of exported HF folders
};

struct DataSpec {
  std::int64_t max_seq_len = 2048;
  Truncation truncation = Truncation::kTruncate;
  OnBadRecord on_bad_record = OnBadRecord::kError;
  std::int64_t max_record_bytes =
      8 << 20;  // one record (jsonl line, array element, .txt document); larger is bad
  Batching batching = Batching::kPack;
  std::int64_t pack_window = 1024;  // samples per best-fit-decreasing window
  bool group_by_length = false;     // pad mode: sort within windows by length
  bool shuffle = true;
  std::string cache_dir = ".sft_cache";
  std::int64_t seed = -1;  // subsets and order of the data; -1: the run's seed
};

struct TrainSpec : StageHparams {
  std::int64_t batch_size = 8;  // rows per micro-batch per rank (packed rows or samples)
  std::int64_t grad_accum = 1;
  // The global batch in samples (the paper's and FastChat's unit): every optimizer step
  // takes exactly this many samples, packed or padded into as many micro-batches of at
  // most tokens_per_micro_batch (rows x width) per rank as they need. 0: the batch is
  // batch_size x grad_accum x world rows. Exclusive with grad_accum.
  std::int64_t samples_per_step = 0;
  std::int64_t tokens_per_micro_batch = 0;  // 0: batch_size x data.max_seq_len
  // The global batch in rows, kept on any world size: each rank accumulates
  // rows_per_step / (batch_size x ranks) micro-batches (a world size that does not divide
  // it is refused). 0: batch_size x grad_accum x ranks, which scales with the world size.
  std::int64_t rows_per_step = 0;
  double max_grad_norm = 1.0;  // <= 0 disables clipping
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_eps = 1e-8;
  Precision precision = Precision::kFp32;
  bool activation_checkpointing = false;
  std::int64_t log_every = 10;
  std::int64_t save_every = 0;  // 0: only at stage ends
  std::int64_t keep_checkpoints = 2;
  std::int64_t checkpoint_staging_mb = 1024;  // host memory a GPU's tensors go through to the file
  bool async_checkpoint = false;              // write checkpoints in a background thread from a host copy
  std::int64_t max_nonfinite_steps = 5;
  int threads = 0;                             // 0: OMP_NUM_THREADS, else every usable core
  std::string device = "auto";                 // auto | cpu | cuda | cuda:N
  std::int64_t max_steps = 0;                  // > 0 stops early (smoke tests)
  bool reset_optimizer_between_stages = true;  // the paper trains each stage as a new run
  bool export_stage_models = true;
};

struct DistSpec {
  DistStrategy strategy = DistStrategy::kDdp;
  Backend backend = Backend::kAuto;
  int timeout_s = 60;
  double bucket_mb = 25.0;
  int prefetch = 1;                               // zero3: units gathered ahead of the one computing
  GatherDtype gather_dtype = GatherDtype::kAuto;  // zero3: auto = the compute dtype
  ReduceDtype reduce_dtype = ReduceDtype::kFp32;
  int reduce_inflight = 2;    // zero2/3: gradient reductions in flight
  int gpus = 0;               // dry-run planner: device count to plan for (0: the launch's)
  std::string gpu_type = "";  // dry-run planner: a100-80gb | a100-40gb | h100 | h200 | ...
};

struct EvalBenchmark {
  std::string name;  // gsm8k | humaneval | mtbench | math | code | general
  std::string data;  // file; empty: the benchmark's default
  std::int64_t limit = 0;
};

struct EvalSpec {
  bool at_stage_end = false;
  bool at_end = false;
  std::vector<EvalBenchmark> benchmarks;
  std::int64_t max_new_tokens = 256;
  std::int64_t batch_size = 8;
};

// Where a resolved setting came from, for the table printed at start.
struct Setting {
  std::string key;
  std::string value;
  std::string source;  // "default", "file:line" or "--set"
};

struct RunConfig {
  std::string source_file;
  std::string run_name;
  std::uint64_t seed = 1;
  std::string output_dir;
  ModelSpec model;
  std::string tokenizer;                          // sentencepiece .model path
  Template chat_template = Template::kVicunaV11;  // template.name
  std::optional<std::string> system_message;
  DataSpec data;
  std::vector<DatasetSpec> datasets;
  Strategy strategy = Strategy::kCustom;
  double k = 0.0;  // DMT: the replay share (strategy.k), each replay StageSource's share
  std::vector<StageSpec> stages;
  TrainSpec train;
  DistSpec dist;
  EvalSpec eval;
  std::vector<Setting> settings;

  const DatasetSpec& dataset(const std::string& name) const;  // throws ConfigError
  std::uint64_t data_seed() const { return data.seed >= 0 ? static_cast<std::uint64_t>(data.seed) : seed; }
  nlohmann::json to_json() const;  // every resolved field
};

// The key reference (`sft config keys`, docs/config.md): every key with its kind,
// default and meaning, from the same declarations that read them.
struct KeyDoc {
  std::string key, kind, default_value, doc;
};
std::vector<KeyDoc> key_reference();
std::string key_reference_markdown();  // as a Markdown table

// Whether a resumed run may change a setting without --resume-override: `key` is a
// flattened to_json() key ("train.log_every", "datasets.math.path"), and the settings that
// may change are those that do not change what is trained (where outputs go, logging and
// saving, how long to train, evaluation, how ranks talk).
bool resume_may_change(const std::string& key);

// Parses "0.25", "1/4", "25%"; nullopt when malformed.
std::optional<double> parse_fraction(const std::string& text);

// REQUIRES: overrides are "key.path=value" (value parsed as YAML).
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides = {});
RunConfig parse_run_config(const std::string& yaml_text, const std::string& source_name,
                           const std::vector<std::string>& overrides = {});

// Applies overrides to a YAML document and returns the resulting YAML text (sweeps use it
// to write each run's config). Throws ConfigError for a malformed override.
std::string apply_overrides_to_text(const std::string& yaml_text, const std::vector<std::string>& overrides);

}  // namespace sft::config
