#include "sft/train/dry_run.h"

#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>

#include "sft/model/hf_checkpoint.h"
#include "sft/model/llama.h"
#include "sft/model/llama_config.h"
#include "sft/model/varlen.h"
#include "sft/train/memory_plan.h"
#include "sft/train/optimizer.h"
#include "sft/data/run_data.h"
#include "sft/train/run_model.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft::train {
namespace {

constexpr double kAssumedTokensPerSample = 256;  // when the data files are absent (real SFT mean ~210)

bool data_present(const config::RunConfig& cfg) {
  if (!fs::exists(cfg.tokenizer)) return false;
  for (const auto& d : cfg.datasets)
    if (!fs::exists(d.path)) return false;
  return true;
}

// The heaviest micro-batch of the steps the run takes (train.max_steps counts): the most
// rows x width, its trained tokens, and the most attention scores per head, as the model
// groups packed samples (model/varlen.h).
struct LargestMicroBatch {
  std::int64_t rows = 0, width = 0, trained_tokens = 0;
  double score_elements = 0;
};

LargestMicroBatch largest_micro_batch(const data::RunData& rd, const config::RunConfig& cfg, int world) {
  LargestMicroBatch most;
  std::int64_t steps_left =
      cfg.train.max_steps > 0 ? cfg.train.max_steps : std::numeric_limits<std::int64_t>::max();
  for (const auto& stream : rd.streams)
    for (std::int64_t step = 0; step < stream->steps() && steps_left > 0; ++step, --steps_left)
      for (int rank = 0; rank < world; ++rank)
        for (std::int64_t m = 0; m < stream->accumulation(step); ++m) {
          const data::MicroBatch* mb = stream->micro_batch(step, rank, m);
          if (!mb) continue;
          const auto rows = static_cast<std::int64_t>(mb->rows.size());
          if (rows * mb->width > most.rows * most.width)
            most = {rows, mb->width, mb->trained_tokens, most.score_elements};
          if (cfg.data.batching != config::Batching::kPack) continue;
          std::vector<std::int64_t> lengths;
          for (const auto& row : mb->rows)
            for (const auto& ref : row.samples)
              lengths.push_back(
                  std::min(cfg.data.max_seq_len,
                           rd.datasets[static_cast<std::size_t>(ref.dataset)]->length(ref.record)));
          most.score_elements = std::max(most.score_elements, model::varlen_score_elements(lengths));
        }
  return most;
}

bool on_cuda(const config::RunConfig& cfg) {
  const auto device = config::parse_device(cfg.train.device);
  return (device && device->kind == config::DeviceChoice::kCuda) ||
         cfg.dist.backend == config::Backend::kNccl;
}

}  // namespace

MemoryPlanInput memory_plan_input(const config::RunConfig& cfg, const RunModel& model,
                                  const data::RunData* data, int world) {
  const model::LlamaConfig& mc = model.config;
  MemoryPlanInput in;
  in.model = mc;
  {
    // The model as the trainer builds it, without storage: its exact flat layout.
    model::Llama meta(mc, c10::kCPU, c10::kFloat, /*materialize=*/false);
    for (const auto& u : FlatLayout::build(meta, world).units) in.units.push_back(u.padded);
    for (const auto& p : meta.parameters()) in.largest_param = std::max(in.largest_param, p.tensor.numel());
  }
  in.world = world;
  in.strategy = cfg.dist.strategy;
  in.precision = cfg.train.precision;
  in.activation_checkpointing = cfg.train.activation_checkpointing;
  in.prefetch = cfg.dist.prefetch;
  in.bf16_gathers = cfg.train.precision == config::Precision::kBf16Pure ||
                    (cfg.train.precision == config::Precision::kBf16 &&
                     cfg.dist.gather_dtype == config::GatherDtype::kAuto);
  in.reduce_inflight = cfg.dist.reduce_inflight;
  in.bf16_reduce = cfg.dist.reduce_dtype == config::ReduceDtype::kBf16;
  in.async_checkpoint = cfg.train.async_checkpoint;
  const bool cuda = on_cuda(cfg);
  in.copying_collectives = !cuda && world > 1;  // Gloo
  in.cpu = !cuda;
  // Without the data, the widest micro-batch the token budget allows (batch_size rows when unset).
  in.rows = std::max<std::int64_t>(1, data::micro_batch_token_budget(cfg) / cfg.data.max_seq_len);
  in.seq_len = cfg.data.max_seq_len;
  if (data) {
    const LargestMicroBatch mb = largest_micro_batch(*data, cfg, world);
    if (mb.rows > 0) {
      in.rows = mb.rows;
      in.seq_len = mb.width;
      in.trained_fraction = static_cast<double>(mb.trained_tokens) / static_cast<double>(mb.rows * mb.width);
      in.score_elements = mb.score_elements;
    }
  }
  // LibTorch 2.x's scaled_dot_product_attention keeps no (T x T) scores: flash or
  // memory-efficient kernels on CUDA, the flash kernel on the CPU.
  in.fused_attention = true;
  in.seeded_init = !model.pretrained;
  in.eval = (cfg.eval.at_end || cfg.eval.at_stage_end) && !cfg.eval.benchmarks.empty();
  in.eval_mid_training = cfg.eval.at_stage_end && cfg.stages.size() > 1;
  in.eval_batch = cfg.eval.batch_size;
  in.eval_weight_bytes = cuda && cfg.train.precision != config::Precision::kFp32 ? 2 : 4;
  in.device_bytes = cuda ? gpu_memory_bytes(cfg.dist.gpu_type) : 0.0;
  return in;
}

namespace {

using nlohmann::ordered_json;

// The stages' samples, tokens and steps: exact from the data (kept in `rd` for the memory
// plan) when its files are present, else estimated from datasets.*.size.
void add_stage_plan(const config::RunConfig& cfg, const RunModel& rm, int world,
                    std::optional<data::RunData>& rd, ordered_json& out) {
  ordered_json stages = ordered_json::array();
  std::int64_t total_steps = 0;
  const bool exact = data_present(cfg);
  const std::int64_t rows_per_step = cfg.train.batch_size * data::rows_accumulation(cfg, world) * world;
  if (exact) {
    // Before any dataset is cached: a refused plan writes nothing.
    check_vocab_covers(rm, data::Tokenizer::load(cfg.tokenizer)->vocab_size(), cfg);
    rd = data::build_run_data(cfg, world);
    for (std::size_t s = 0; s < rd->streams.size(); ++s) {
      const auto& st = *rd->streams[s];
      stages.push_back({{"name", cfg.stages[s].name},
                        {"samples", st.samples_per_epoch()},
                        {"epochs", st.epochs()},
                        {"tokens", st.tokens()},
                        {"target_tokens", st.trained_tokens()},
                        {"steps", st.steps()},
                        {"packing_efficiency", st.packing_efficiency()}});
      total_steps += st.steps();
    }
  } else {
    data::DataPlan plan = data::plan_without_tokenizing(cfg);
    for (std::size_t s = 0; s < plan.stages.size(); ++s) {
      const auto& spec = cfg.stages[s];
      const double epoch_tokens = static_cast<double>(plan.stages[s].samples) * kAssumedTokensPerSample;
      const double epoch_rows = cfg.data.batching == config::Batching::kPack
                                    ? epoch_tokens / (0.97 * static_cast<double>(cfg.data.max_seq_len))
                                    : static_cast<double>(plan.stages[s].samples);
      // In samples, each epoch's last step may be short, as a padded trainer's is.
      const auto steps_of = [&](int epochs) {
        return cfg.train.samples_per_step > 0
                   ? epochs * data::step_count(plan.stages[s].samples, cfg.train.samples_per_step)
                   : data::step_count(static_cast<std::int64_t>(std::ceil(epochs * epoch_rows)),
                                      rows_per_step);
      };
      int epochs = spec.epochs;  // raised as the stream raises it for train.min_steps
      while (plan.stages[s].samples > 0 && steps_of(epochs) < spec.min_steps) ++epochs;
      const double tokens = epochs * epoch_tokens;
      const auto steps = steps_of(epochs);
      stages.push_back({{"name", spec.name},
                        {"samples", plan.stages[s].samples},
                        {"epochs", epochs},
                        {"tokens_estimated", static_cast<std::int64_t>(tokens)},
                        {"steps_estimated", steps}});
      total_steps += steps;
    }
    out["data_note"] = "data files absent: counts from datasets.*.size, assuming " +
                       std::to_string(static_cast<int>(kAssumedTokensPerSample)) + " tokens per sample";
  }
  out["stages"] = stages;
  out["total_steps"] = total_steps;
  if (cfg.train.samples_per_step > 0) {
    out["samples_per_optimizer_step"] = cfg.train.samples_per_step;
    out["tokens_per_micro_batch"] = data::micro_batch_token_budget(cfg);
  }
  out["global_batch"] = data::describe_global_batch(cfg, world);
  out["rows_per_optimizer_step"] =
      cfg.train.samples_per_step > 0 ? nlohmann::ordered_json() : ordered_json(rows_per_step);
}

// Memory per rank for this run, for every dist.strategy with and without activation
// checkpointing, and for the LLaMA-1 sizes.
void add_memory_plan(const config::RunConfig& cfg, const RunModel& rm, const data::RunData* rd, int world,
                     ordered_json& out) {
  const bool cuda = on_cuda(cfg);
  const double gpu = gpu_memory_bytes(cfg.dist.gpu_type);
  const MemoryPlanInput in = memory_plan_input(cfg, rm, rd, world);
  MemoryPlan mp = plan_memory(in);
  ordered_json mem = mp.to_json();
  mem["device"] = cuda ? (cfg.dist.gpu_type.empty() ? "cuda" : cfg.dist.gpu_type) : "cpu";
  mem["fused_attention"] = in.fused_attention;
  if (gpu > 0) {
    mem["device_gib"] = gpu / (1024.0 * 1024 * 1024);
    mem["fits"] = mp.total <= 0.92 * gpu;  // leave room for the CUDA context and fragmentation
  }
  out["memory_per_rank"] = mem;

  ordered_json table = ordered_json::array();
  for (const auto& strat : config::Choices<config::DistStrategy>::all) {
    for (bool ck : {false, true}) {
      MemoryPlanInput x = in;
      x.strategy = strat.value;
      x.activation_checkpointing = ck;
      MemoryPlan p = plan_memory(x);
      ordered_json row = {{"strategy", std::string(strat.name)},
                          {"activation_checkpointing", ck},
                          {"total_gib", p.total / (1024.0 * 1024 * 1024)}};
      if (gpu > 0) row["fits"] = p.total <= 0.92 * gpu;
      table.push_back(row);
    }
  }
  out["strategies"] = table;

  ordered_json sizes = ordered_json::array();
  for (const char* size : {"7B", "13B", "33B", "65B"}) {
    ordered_json row = {{"model", std::string("LLaMA-") + size}};
    for (const auto& strat : config::Choices<config::DistStrategy>::all) {
      MemoryPlanInput x = in;
      x.model = llama1_config(size);
      x.units.clear();  // derived from the config
      x.largest_param = 0;
      x.strategy = strat.value;
      x.activation_checkpointing = true;
      row[std::string(strat.name) + "_gib"] = plan_memory(x).total / (1024.0 * 1024 * 1024);
    }
    sizes.push_back(row);
  }
  out["llama_sizes_with_checkpointing"] = sizes;
}

}  // namespace

nlohmann::ordered_json dry_run(const config::RunConfig& cfg, int world_size) {
  using nlohmann::ordered_json;
  // The real world size under a launcher; dist.gpus (the cluster the config is sized for)
  // when planned from a single process.
  const int world = world_size > 1 ? world_size : cfg.dist.gpus > 0 ? cfg.dist.gpus : 1;
  const RunModel rm = resolve_run_model(cfg, /*planning=*/true);
  const model::LlamaConfig& mc = rm.config;
  ordered_json out;
  out["config"] = cfg.source_file;
  out["model"] = {{"model_type", mc.model_type_name()},
                  {"parameters", mc.num_parameters()},
                  {"layers", mc.num_hidden_layers},
                  {"hidden_size", mc.hidden_size},
                  {"vocab_size", mc.vocab_size}};
  out["world_size"] = world;
  out["strategy"] = config::name(cfg.dist.strategy);
  out["precision"] = config::name(cfg.train.precision);
  out["activation_checkpointing"] = cfg.train.activation_checkpointing;

  std::optional<data::RunData> rd;
  add_stage_plan(cfg, rm, world, rd, out);
  add_memory_plan(cfg, rm, rd ? &*rd : nullptr, world, out);
  return out;
}

std::string format_dry_run(const nlohmann::ordered_json& p) {
  std::string s;
  char buf[512];
  std::snprintf(buf, sizeof buf, "dry run of %s: %lld-parameter model, %d rank(s), %s, %s%s\n",
                p["config"].get<std::string>().c_str(), p["model"]["parameters"].get<long long>(),
                p["world_size"].get<int>(), p["strategy"].get<std::string>().c_str(),
                p["precision"].get<std::string>().c_str(),
                p["activation_checkpointing"].get<bool>() ? ", activation checkpointing" : "");
  s += buf;
  if (p.contains("data_note")) s += "  note: " + p["data_note"].get<std::string>() + "\n";
  s += "  global batch: " + p["global_batch"].get<std::string>() + "\n";
  for (const auto& st : p["stages"]) {
    bool est = st.contains("steps_estimated");
    std::snprintf(
        buf, sizeof buf, "  stage %-14s %9lld samples x %d epochs, %12lld tokens%s, %8lld steps%s\n",
        st["name"].get<std::string>().c_str(), st["samples"].get<long long>(), st["epochs"].get<int>(),
        est ? st["tokens_estimated"].get<long long>() : st["tokens"].get<long long>(), est ? " (est.)" : "",
        est ? st["steps_estimated"].get<long long>() : st["steps"].get<long long>(), est ? " (est.)" : "");
    s += buf;
  }
  const auto& m = p["memory_per_rank"];
  std::snprintf(buf, sizeof buf,
                "memory per rank (%s%s): weights %.2f GiB, grads %.2f, optimizer %.2f, gathered params %.2f, "
                "activations %.2f (without checkpointing %.2f, with %.2f), logits %.2f => total %.2f GiB",
                m["device"].get<std::string>().c_str(),
                m["fused_attention"].get<bool>() ? ", fused attention" : "", m["weights_gib"].get<double>(),
                m["grads_gib"].get<double>(), m["optimizer_gib"].get<double>(),
                m["gathered_params_gib"].get<double>(), m["activations_gib"].get<double>(),
                m["activations_without_checkpointing_gib"].get<double>(),
                m["activations_with_checkpointing_gib"].get<double>(), m["logits_gib"].get<double>(),
                m["total_gib"].get<double>());
  s += buf;
  const auto& ph = m["phases_gib"];
  std::snprintf(
      buf, sizeof buf,
      "\n  peak per phase: load %.2f GiB, forward+backward %.2f (without checkpointing %.2f, with %.2f), "
      "optimizer step %.2f, export %.2f, eval %.2f",
      ph["load"].get<double>(), ph["forward_backward"].get<double>(),
      m["forward_backward_without_checkpointing_gib"].get<double>(),
      m["forward_backward_with_checkpointing_gib"].get<double>(), ph["optimizer"].get<double>(),
      ph["export"].get<double>(), ph["eval"].get<double>());
  s += buf;
  if (m.contains("fits"))
    s += std::string(m["fits"].get<bool>() ? " -- fits " : " -- DOES NOT FIT ") +
         std::to_string(static_cast<int>(m["device_gib"].get<double>())) + " GiB";
  s += "\n  strategy            no ckpt      ckpt\n";
  for (std::size_t i = 0; i + 1 < p["strategies"].size(); i += 2) {
    const auto& a = p["strategies"][i];
    const auto& b = p["strategies"][i + 1];
    auto cell = [](const nlohmann::ordered_json& r) {
      char c[48];
      std::snprintf(c, sizeof c, "%8.1f GiB%s", r["total_gib"].get<double>(),
                    r.contains("fits") ? (r["fits"].get<bool>() ? " " : "!") : " ");
      return std::string(c);
    };
    std::snprintf(buf, sizeof buf, "  %-10s %s %s\n", a["strategy"].get<std::string>().c_str(),
                  cell(a).c_str(), cell(b).c_str());
    s += buf;
  }
  s += "  (! = does not fit the device)\n  per rank with checkpointing, same batch shape and rank count:\n";
  for (const auto& r : p["llama_sizes_with_checkpointing"]) {
    std::snprintf(buf, sizeof buf, "  %-10s ddp %7.1f GiB  zero1 %7.1f  zero2 %7.1f  zero3 %7.1f\n",
                  r["model"].get<std::string>().c_str(), r["ddp_gib"].get<double>(),
                  r["zero1_gib"].get<double>(), r["zero2_gib"].get<double>(), r["zero3_gib"].get<double>());
    s += buf;
  }
  return s;
}

}  // namespace sft::train
