// The sections' key tables (fields.h): one row per key.
#include "config/fields.h"

#include <climits>
#include <cmath>

namespace sft::config {
namespace {

template <class S>
Field<S> custom(std::string key, std::string kind, std::string doc,
                std::function<void(Reader&, const std::string&, S&)> read,
                std::function<nlohmann::json(const S&)> json) {
  return {std::move(key), std::move(kind), std::move(doc), std::move(read), std::move(json)};
}

}  // namespace

const Table<StageHparams>& stage_hparam_fields() {
  using S = StageHparams;
  static const Table<S> t = {
      integer("epochs", &S::epochs, 1, 1000, "passes over the stage's data"),
      integer("min_steps", &S::min_steps, 0, 100000,
              "fewest optimizer steps of the stage: epochs are added until it has them (0: off)"),
      number("lr", &S::lr, 0.0, 10.0, kOpenLow, "peak learning rate"),
      number("min_lr_ratio", &S::min_lr_ratio, 0.0, 1.0, kClosed, "the schedule's floor, as a share of lr"),
      choice("schedule", &S::schedule, "learning-rate decay after warm-up"),
      number("warmup_ratio", &S::warmup_ratio, 0.0, 1.0, kClosed, "warm-up as a share of the stage's steps"),
      integer("warmup_steps", &S::warmup_steps, -1, INT64_MAX,
              "warm-up in steps; >= 0 takes precedence over warmup_ratio"),
  };
  return t;
}

const Table<TrainSpec>& train_fields() {
  using S = TrainSpec;
  static const Table<S> t = {
      integer("batch_size", &S::batch_size, 1, INT64_MAX,
              "rows per micro-batch per rank (packed rows or samples)"),
      integer("grad_accum", &S::grad_accum, 1, INT64_MAX, "micro-batches per optimizer step"),
      integer("samples_per_step", &S::samples_per_step, 0, INT64_MAX,
              "the global batch in samples, in as many micro-batches as they need (0: in rows)")
          .when([](const S& s) { return s.samples_per_step > 0; }),
      integer("tokens_per_micro_batch", &S::tokens_per_micro_batch, 0, INT64_MAX,
              "with samples_per_step: a micro-batch's tokens per rank (0: batch_size x data.max_seq_len)")
          .when([](const S& s) { return s.samples_per_step > 0; }),
      integer("rows_per_step", &S::rows_per_step, 0, INT64_MAX,
              "the global batch in rows, kept on any world size that divides it (0: batch_size x grad_accum "
              "x ranks)")
          .when([](const S& s) { return s.rows_per_step > 0; }),
      number("max_grad_norm", &S::max_grad_norm, 0.0, HUGE_VAL, kClosed, "gradient clipping; 0 disables it"),
      number("weight_decay", &S::weight_decay, 0.0, 10.0, kClosed, "AdamW's decoupled weight decay"),
      number("adam_beta1", &S::adam_beta1, 0.0, 1.0, kClosed, "AdamW's beta1"),
      number("adam_beta2", &S::adam_beta2, 0.0, 1.0, kClosed, "AdamW's beta2"),
      number("adam_eps", &S::adam_eps, 0.0, 1.0, kOpenLow, "AdamW's epsilon"),
      choice("precision", &S::precision, "bf16: autocast over fp32 weights; bf16-pure: bf16 weights"),
      boolean("activation_checkpointing", &S::activation_checkpointing,
              "recompute each layer in the backward"),
      integer("log_every", &S::log_every, 1, INT64_MAX, "steps between log lines and metrics records").free(),
      integer("save_every", &S::save_every, 0, INT64_MAX, "steps between checkpoints (0: at stage ends only)")
          .free(),
      integer("keep_checkpoints", &S::keep_checkpoints, 1, INT64_MAX, "checkpoints kept, newest first")
          .free(),
      integer("checkpoint_staging_mb", &S::checkpoint_staging_mb, 1, 1 << 20,
              "host memory a GPU's tensors pass through on their way to a checkpoint file")
          .free()
          .when([](const S& s) { return s.checkpoint_staging_mb != 1024; }),
      boolean("async_checkpoint", &S::async_checkpoint,
              "write checkpoints in a background thread while training goes on (costs a host copy of the "
              "rank's state)")
          .free()
          .when([](const S& s) { return s.async_checkpoint; }),
      integer("max_nonfinite_steps", &S::max_nonfinite_steps, 1, INT64_MAX,
              "consecutive non-finite steps (skipped) before the run stops"),
      integer("threads", &S::threads, 0, 4096, "CPU threads (0: OMP_NUM_THREADS, else every usable core)")
          .free(),
      custom<S>(
          "device", "auto | cpu | cuda | cuda:N", "where to train (auto: the rank's GPU when there is one)",
          [](Reader& r, const std::string& p, S& s) {
            s.device = r.str(p, s.device);
            if (!parse_device(s.device))
              r.error(p, "\"" + s.device + "\" is not one of: auto, cpu, cuda, cuda:N");
          },
          [](const S& s) { return nlohmann::json(s.device); })
          .free(),
      integer("max_steps", &S::max_steps, 0, INT64_MAX, "> 0 stops after this many steps (smoke tests)")
          .free(),
      boolean("reset_optimizer_between_stages", &S::reset_optimizer_between_stages,
              "a fresh AdamW state per stage, as the paper trains each stage as its own run"),
      boolean("export_stage_models", &S::export_stage_models,
              "export each stage's model, not only the final one")
          .free(),
  };
  return t;
}

const Table<DataSpec>& data_fields() {
  using S = DataSpec;
  static const Table<S> t = {
      integer("max_seq_len", &S::max_seq_len, 8, 1 << 22, "tokens per sample (and per packed row)"),
      choice("truncation", &S::truncation, "a longer sample: cut at max_seq_len, or dropped"),
      choice("on_bad_record", &S::on_bad_record,
             "a malformed record: stop with file:line, or count and skip it"),
      integer("max_record_bytes", &S::max_record_bytes, 1, std::int64_t{1} << 40,
              "a larger record (jsonl line, array element, .txt document) is a bad record"),
      choice("batching", &S::batching, "pack samples into rows, pad to the longest, or pad to max_seq_len"),
      integer("pack_window", &S::pack_window, 1, INT64_MAX, "samples per best-fit-decreasing packing window"),
      boolean("group_by_length", &S::group_by_length, "pad batching: sort by length within windows"),
      boolean("shuffle", &S::shuffle, "shuffle each epoch (seeded)"),
      text("cache_dir", &S::cache_dir, "the tokenized-data cache").free(),
      integer("seed", &S::seed, -1, INT64_MAX,
              "the data's seed: which records a fraction selects, and their order; "
              "vary it apart from the initialisation's (-1: the run's seed)")
          .when([](const S& s) { return s.seed >= 0; }),
  };
  return t;
}

const Table<ModelSpec>& model_fields() {
  using S = ModelSpec;
  static const Table<S> t = {
      text("path", &S::path, "a Hugging Face folder (config.json, safetensors); may be empty").free(),
      choice("init", &S::init, "auto: the folder's weights when it has them, else random"),
      custom<S>(
          "config", "map", "config.json fields, merged over path/config.json (these win)",
          [](Reader& r, const std::string& p, S& s) {
            const Tree* mc = r.find(p);
            if (!mc || mc->is_null()) return;
            if (!mc->is_object()) return r.error(p, "expected a map of config.json fields");
            for (auto it = mc->begin(); it != mc->end(); ++it) {
              s.config[it.key()] = scalar_json(it.value());
              if (!it.value().is_null())
                r.record(p + "." + it.key(),
                         it.value().is_string() ? it.value().get<std::string>() : s.config[it.key()].dump(),
                         true);
            }
          },
          [](const S& s) { return s.config; }),
      choice("save_dtype", &S::save_dtype, "dtype of exported Hugging Face folders").free(),
  };
  return t;
}

const Table<DistSpec>& dist_fields() {
  using S = DistSpec;
  static const Table<S> t = {
      choice("strategy", &S::strategy, "replicas (ddp) or ZeRO stage 1, 2 or 3 sharding"),
      choice("backend", &S::backend, "the process group (auto: NCCL for CUDA, Gloo for CPU)").free(),
      integer("timeout_s", &S::timeout_s, 1, 86400, "collective timeout").free(),
      number("bucket_mb", &S::bucket_mb, 0.0, 1e6, kOpenLow,
             "ddp/zero1: gradients all-reduced per bucket, launched during the backward")
          .free(),
      integer("prefetch", &S::prefetch, 0, 64,
              "zero3: units gathered ahead of the one computing (0: each as it is used)")
          .free()
          .when([](const S& s) { return s.prefetch != 1; }),
      choice("gather_dtype", &S::gather_dtype,
             "zero3: what layers are gathered in (auto: the compute dtype, bf16 under train.precision bf16)")
          .when([](const S& s) { return s.gather_dtype != GatherDtype::kAuto; }),
      choice("reduce_dtype", &S::reduce_dtype, "what gradients are summed in across ranks")
          .when([](const S& s) { return s.reduce_dtype != ReduceDtype::kFp32; }),
      integer("reduce_inflight", &S::reduce_inflight, 1, 64,
              "zero2/3: gradient reductions in flight before the oldest is waited")
          .free()
          .when([](const S& s) { return s.reduce_inflight != 2; }),
      integer("gpus", &S::gpus, 0, 1 << 20, "--dry-run: device count to plan for (0: the launch's)").free(),
      text("gpu_type", &S::gpu_type, "--dry-run: a100-80gb | a100-40gb | h100 | h200 | ...").free(),
  };
  return t;
}

const Table<EvalBenchmark>& benchmark_fields() {
  using S = EvalBenchmark;
  static const Table<S> t = {
      text("name", &S::name, "gsm8k | humaneval | mtbench | math | code | general").free(),
      text("data", &S::data, "the benchmark's file (empty: its default)").free(),
      integer("limit", &S::limit, 0, INT64_MAX, "items evaluated (0: all)").free(),
  };
  return t;
}

const Table<EvalSpec>& eval_fields() {
  using S = EvalSpec;
  static const Table<S> t = {
      boolean("at_stage_end", &S::at_stage_end, "evaluate each stage's model (and the final one)").free(),
      boolean("at_end", &S::at_end, "evaluate the final model").free(),
      custom<S>(
          "benchmarks", "list of names or {name, data, limit}", "what to evaluate",
          [](Reader& r, const std::string& p, S& s) {
            const Tree* b = r.find(p);
            if (!b || b->is_null()) return;
            if (!b->is_array()) return r.error(p, "expected a list of {name, data, limit}");
            for (std::size_t i = 0; i < b->size(); ++i) {
              const std::string pi = p + "[" + std::to_string(i) + "]";
              EvalBenchmark e;
              if ((*b)[i].is_string()) {
                e.name = r.str(pi, "");
              } else {
                r.check_keys(pi, keys(benchmark_fields()));
                read_fields(r, pi, benchmark_fields(), e);
              }
              if (e.name.empty()) r.error(pi, "missing: the benchmark name");
              s.benchmarks.push_back(e);
            }
          },
          [](const S& s) {
            nlohmann::json b = nlohmann::json::array();
            for (const auto& e : s.benchmarks) {
              nlohmann::json j;
              write_fields(benchmark_fields(), e, j);
              b.push_back(j);
            }
            return b;
          })
          .free(),
      integer("max_new_tokens", &S::max_new_tokens, 1, INT64_MAX, "generation budget per answer").free(),
      integer("batch_size", &S::batch_size, 1, INT64_MAX, "prompts generated together").free(),
  };
  return t;
}

const Table<DatasetSpec>& dataset_fields() {
  using S = DatasetSpec;
  static const Table<S> t = {
      custom<S>(
          "path", "string (required)",
          "the dataset file (.jsonl, .json, .txt; any of them gzip-compressed as .gz)",
          [](Reader& r, const std::string& p, S& s) {
            s.path = r.str(p, "");
            if (s.path.empty()) r.error(p, "missing: the dataset file");
          },
          [](const S& s) { return nlohmann::json(s.path); })
          .free()
          .defaults("-"),
      custom<S>(
          "format", "one of: " + choice_list<Format>() + " (required)", "how records are read",
          [](Reader& r, const std::string& p, S& s) {
            if (!r.has(p)) return r.error(p, "missing: one of " + choice_list<Format>());
            s.format = r.choice<Format>(p, s.format);
          },
          [](const S& s) { return nlohmann::json(name(s.format)); })
          .defaults("-"),
      text("ability", &S::ability, "\"general\" marks general chat data; anything else is specialised")
          .defaults("the dataset's name"),
      number(
          "fraction", &S::fraction, 0.0, 1.0, kOpenLow | kFraction,
          "data scaling: the first round(f x N) records of the seeded permutation (nested across fractions)"),
      boolean("strip_calculator", &S::strip_calculator, "gsm8k: drop the <<a+b=c>> annotations"),
      custom<S>(
          "filter", "{field, equals}", "keep the records whose `field` equals `equals`",
          [](Reader& r, const std::string& p, S& s) {
            if (!r.has(p)) return;
            r.check_keys(p, {"field", "equals"});
            s.filter_field = r.str(p + ".field", "");
            if (s.filter_field.empty()) r.error(p + ".field", "missing: the record field to test");
            const Tree* eq = r.find(p + ".equals");
            if (!eq || eq->is_null()) return r.error(p + ".equals", "missing: the value to keep (e.g. true)");
            s.filter_equals = scalar_json(*eq);
            r.record(p + ".equals", eq->is_string() ? eq->get<std::string>() : eq->dump(), true);
          },
          [](const S& s) {
            return nlohmann::json{{"field", s.filter_field}, {"equals", s.filter_equals}};
          })
          .when([](const S& s) { return !s.filter_field.empty(); })
          .defaults("none"),
      text("text_field", &S::text_field, "text format: the field holding the text (jsonl)")
          .when([](const S& s) { return s.format == Format::kText; }),
      integer("size", &S::size, -1, INT64_MAX,
              "expected record count, for planning without the file (-1: unknown)")
          .when([](const S& s) { return s.size >= 0; }),
      integer("repeat", &S::repeat, 1, 1000,
              "upsampling: each selected record this many times per stage epoch")
          .when([](const S& s) { return s.repeat != 1; }),
      custom<S>(
          "system_message", "string", "overrides the template's system message for this dataset",
          [](Reader& r, const std::string& p, S& s) { s.system_message = r.opt_str(p); },
          [](const S& s) { return nlohmann::json(s.system_message.value_or("")); })
          .when([](const S& s) { return s.system_message.has_value(); })
          .defaults("template.system_message"),
  };
  return t;
}

}  // namespace sft::config
