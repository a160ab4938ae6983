#include "sft/train/bench.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sched.h>
#include <sys/resource.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <set>

#include "sft/dist/context.h"
#include "sft/dist/launch.h"
#include "sft/model/llama.h"
#include "sft/model/precision.h"
#include "sft/train/data_parallel.h"
#include "sft/train/memory_tracker.h"
#include "sft/train/optimizer.h"
#include "sft/train/trace.h"
#include "sft/train/trainer.h"
#include "sft/util/cuda.h"
#include "sft/util/error.h"
#include "sft/util/log.h"

namespace sft::train {
namespace {

using Clock = std::chrono::steady_clock;

struct Preset {
  std::int64_t dim, layers, heads, kv_heads, vocab, ffn, seq, batch;
};

// The presets of reference_train.py.
const std::map<std::string, Preset> kPresets = {
    {"tiny", {128, 4, 4, 4, 512, 352, 256, 8}},
    {"small", {512, 8, 8, 8, 32000, 1408, 512, 4}},
    {"gqa", {512, 8, 8, 2, 32000, 1408, 512, 4}},
    // Not in reference_train.py: TinyLlama-1.1B's shape, for GPU throughput (MFU) runs.
    {"1b", {2048, 22, 32, 4, 32000, 5632, 2048, 4}},
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<std::string> blas_libraries() {
  std::set<std::string> out;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::string low = line;
    std::transform(low.begin(), low.end(), low.begin(), ::tolower);
    if (low.find("blas") == std::string::npos) continue;
    auto slash = line.find('/');
    if (slash != std::string::npos) out.insert(line.substr(slash));
  }
  return {out.begin(), out.end()};
}

// The preset with the command line's overrides applied; `overrides` records them for the report.
Preset resolve_preset(const BenchOptions& o, nlohmann::ordered_json& overrides) {
  auto it = kPresets.find(o.preset);
  if (it == kPresets.end())
    throw ConfigError("--preset: \"" + o.preset + "\" is not one of tiny, small, gqa, 1b");
  Preset p = it->second;
  // The flags that override a preset's value: the field each sets, and its name in the JSON.
  struct Override {
    std::int64_t Preset::*field;
    const char* json;
  };
  static const std::map<std::string, Override> kOverrides = {
      {"dim", {&Preset::dim, "dim"}},       {"layers", {&Preset::layers, "layers"}},
      {"heads", {&Preset::heads, "heads"}}, {"kv-heads", {&Preset::kv_heads, "kv_heads"}},
      {"vocab", {&Preset::vocab, "vocab"}}, {"ffn", {&Preset::ffn, "ffn"}},
      {"seq", {&Preset::seq, "seq"}},       {"batch", {&Preset::batch, "batch"}}};
  for (const auto& [k, v] : o.overrides) {
    const Override& f = kOverrides.at(k);  // the CLI sets only these flags
    p.*(f.field) = v;
    overrides[f.json] = v;
  }
  if (p.dim % p.heads) throw ConfigError("--dim " + std::to_string(p.dim) + " is not divisible by --heads");
  if ((p.dim / p.heads) % 2) throw ConfigError("head_dim must be even for rotary embeddings");
  if (p.heads % p.kv_heads) throw ConfigError("--heads must be a multiple of --kv-heads");
  return p;
}

std::optional<config::DistStrategy> parse_strategy(const std::string& name) {
  std::optional<config::DistStrategy> strategy;
  if (!name.empty()) {
    strategy = config::parse_choice<config::DistStrategy>(name);
    if (!strategy)
      throw ConfigError("--strategy: \"" + name + "\" is not one of " +
                        config::choice_list<config::DistStrategy>());
  }
  return strategy;
}

config::ReduceDtype parse_reduce_dtype(const std::string& name) {
  const auto reduce_dtype = config::parse_choice<config::ReduceDtype>(name);
  if (!reduce_dtype)
    throw ConfigError("--reduce-dtype: \"" + name + "\" is not one of " +
                      config::choice_list<config::ReduceDtype>());
  return *reduce_dtype;
}

// A strategy: the trainer's data-parallel step over a process group (a one-rank group when
// not launched as several ranks).
std::shared_ptr<dist::Context> make_context(const std::optional<config::DistStrategy>& strategy,
                                            const dist::LaunchInfo& launch, c10::Device device) {
  if (!strategy) return dist::Context::single();
  config::DistSpec ds;
  ds.strategy = *strategy;
  ds.backend = device.is_cuda() ? config::Backend::kNccl : config::Backend::kGloo;
  ds.timeout_s = 600;
  return dist::Context::create(launch, ds, device);
}

nlohmann::json model_json(const Preset& p) {
  return {{"hidden_size", p.dim},
          {"intermediate_size", p.ffn},
          {"num_hidden_layers", p.layers},
          {"num_attention_heads", p.heads},
          {"num_key_value_heads", p.kv_heads},
          {"vocab_size", p.vocab},
          {"max_position_embeddings", p.seq},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0}};
}

// Fixed micro-batches of random tokens (each rank its own); the first `prompt` tokens of each
// sequence are prompt. Each batch: ids, positions, labels, trained_positions.
std::vector<std::array<at::Tensor, 4>> random_batches(const BenchOptions& o, const Preset& p,
                                                      std::int64_t prompt, int rank, c10::Device device) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed + static_cast<std::uint64_t>(rank));
  std::vector<std::array<at::Tensor, 4>> batches;
  for (std::int64_t a = 0; a < o.accum; ++a) {
    at::Tensor ids = at::randint(0, p.vocab, {p.batch, p.seq}, gen, at::TensorOptions().dtype(at::kLong));
    at::Tensor labels = at::full({p.batch, p.seq}, model::kIgnoreIndex, at::kLong);
    labels.slice(1, prompt - 1, p.seq - 1)
        .copy_(ids.slice(1, prompt, p.seq));  // position t predicts token t+1
    at::Tensor pos = at::arange(p.seq, at::kLong).view({1, p.seq}).expand({p.batch, p.seq}).contiguous();
    at::Tensor trained =
        (labels.view({-1}) != model::kIgnoreIndex).nonzero().squeeze(1);  // on the host, once
    batches.push_back({ids.to(device), pos.to(device), labels.to(device), trained.to(device)});
  }
  return batches;
}

// What the steps are run with.
struct StepParts {
  const BenchOptions& o;
  c10::Device device;
  bool gpu, bf16, distributed;
  dist::Context& ctx;
  model::Llama& model;
  FlatAdamW& opt;
  DataParallel* dp;
  const std::vector<std::array<at::Tensor, 4>>& batches;
  std::int64_t trained_tokens_per_step;
};

// What one step measured.
struct StepResult {
  double elapsed, fwd, bwd, optim, loss;
  dist::Context::CommTimes comm;
};

// The timed steps' series (the warmup steps add their loss only).
struct Series {
  std::vector<double> step_times, fwd_t, bwd_t, opt_t, losses, comm_t, wait_t;
};

StepResult run_step(const StepParts& s, cuda::EventTimer* timer) {
  s.ctx.drain();
  cuda::synchronize(s.device);
  s.ctx.end_comm_window(/*keep=*/false);
  auto t0 = Clock::now();
  if (s.gpu) timer->start();
  double fwd = 0, bwd = 0;
  at::Tensor loss_total = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(s.device));
  s.opt.zero_grad();
  if (s.dp) s.dp->begin_step();
  for (std::size_t m = 0; m < s.batches.size(); ++m) {
    const auto& b = s.batches[m];
    auto a = Clock::now();
    if (s.dp) s.dp->begin_micro(m + 1 == s.batches.size());
    at::Tensor loss;
    {
      model::AutocastGuard autocast(s.device, c10::kBFloat16, s.bf16);
      loss = s.model.loss_sum(b[0], b[1], at::Tensor(), b[2], b[3]);
    }
    auto mid = Clock::now();
    (loss / static_cast<double>(s.trained_tokens_per_step)).backward();
    auto e = Clock::now();
    fwd += std::chrono::duration<double>(mid - a).count();
    bwd += std::chrono::duration<double>(e - mid).count();
    loss_total += loss.detach().to(at::kDouble);
  }
  auto o0 = Clock::now();
  if (s.dp) s.dp->finish_gradients();
  s.ctx.all_reduce_sum(loss_total);
  s.opt.clip_grad_norm_on_device(1.0, &s.ctx);
  s.opt.step(2e-5);
  if (s.dp) s.dp->after_step();
  s.ctx.end_comm_window(/*keep=*/true);
  double optim = std::chrono::duration<double>(Clock::now() - o0).count();
  s.ctx.drain();
  double elapsed =
      s.gpu ? timer->stop_ms() / 1000.0 : std::chrono::duration<double>(Clock::now() - t0).count();
  const dist::Context::CommTimes comm = s.ctx.take_comm_times().at(0);
  // The reference reports the mean of per-micro-batch mean losses; ours equals it for equal-size
  // micro-batches.
  const double loss = loss_total.item<double>() / static_cast<double>(s.trained_tokens_per_step);
  return {elapsed, fwd, bwd, optim, loss, comm};
}

// The warmup steps, then the timed ones (traced with --profile). `timer`: on a GPU only.
Series run_steps(const StepParts& s, cuda::EventTimer* timer, TraceRecorder& trace) {
  const BenchOptions& o = s.o;
  Series t;
  for (std::int64_t step = 0; step < o.warmup + o.steps; ++step) {
    if (s.gpu && step == o.warmup) reset_peak_tensor_bytes(s.device);
    if (!o.profile.empty() && step == o.warmup) trace.start();
    const StepResult r = run_step(s, timer);
    t.losses.push_back(r.loss);
    const bool timed = step >= o.warmup;
    if (timed) {
      t.step_times.push_back(r.elapsed);
      t.fwd_t.push_back(r.fwd);
      t.bwd_t.push_back(r.bwd);
      t.opt_t.push_back(r.optim);
      t.comm_t.push_back(r.comm.comm_ms);
      t.wait_t.push_back(r.comm.wait_ms);
    }
    sft::log::info("[sft bench] step {:3d} {} loss {:.6f} {:.3f}s{}", step, timed ? "timed " : "warmup",
                   t.losses.back(), r.elapsed,
                   s.distributed
                       ? fmt::format(" comm {:.1f} ms, waited {:.1f} ms", r.comm.comm_ms, r.comm.wait_ms)
                       : "");
  }
  return t;
}

double round_to(double v, int d) {
  double f = std::pow(10.0, d);
  return std::round(v * f) / f;
}

// The model's size and work per token.
struct ModelCounts {
  std::int64_t n_params, n_nonemb, tokens_per_step;
  double fpt;
};

// The JSON of reference_train.py's fields, then sft's own.
nlohmann::ordered_json bench_report(const BenchOptions& o, const Preset& p,
                                    const nlohmann::ordered_json& overrides, const StepParts& s, int threads,
                                    const ModelCounts& n, const Series& t) {
  const c10::Device device = s.device;
  const bool gpu = s.gpu;
  const double step_s = median(t.step_times);
  const double tps = static_cast<double>(n.tokens_per_step) / step_s;
  const double gflops = n.fpt * tps / 1e9;
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  for (double x : t.step_times) all.push_back(round_to(x, 4));
  nlohmann::ordered_json r = {
      {"impl", "sft"},
      {"preset", o.preset},
      {"dtype", o.dtype},
      {"params", n.n_params},
      {"tokens_per_step", n.tokens_per_step},
      {"step_s_median", round_to(step_s, 6)},
      {"tokens_per_s", round_to(tps, 2)},
      {"peak_rss_mb", round_to(static_cast<double>(ru.ru_maxrss) / 1024.0, 1)},
      {"flops_per_token", static_cast<std::int64_t>(n.fpt)},
      {"achieved_gflops", round_to(gflops, 3)},
      {"loss_first", round_to(t.losses.front(), 6)},
      {"loss_last", round_to(t.losses.back(), 6)},
      {"params_nonembedding", n.n_nonemb},
      {"flops_formula", "6*N_nonembedding + 12*layers*seq*heads*head_dim"},
      {"step_s_min", round_to(*std::min_element(t.step_times.begin(), t.step_times.end()), 6)},
      {"step_s_all", all},
      {"phase_s_median",
       {{"fwd", round_to(median(t.fwd_t), 6)},
        {"bwd", round_to(median(t.bwd_t), 6)},
        {"opt", round_to(median(t.opt_t), 6)}}},
      {"config",
       {{"dim", p.dim},
        {"layers", p.layers},
        {"heads", p.heads},
        {"kv_heads", p.kv_heads},
        {"vocab", p.vocab},
        {"ffn", p.ffn},
        {"seq", p.seq},
        {"batch", p.batch},
        {"norm_eps", 1e-5},
        {"rope_theta", 10000.0}}},
      {"overrides", overrides},
      {"accum", o.accum},
      {"steps", o.steps},
      {"warmup", o.warmup},
      {"threads", threads},
      {"seed", o.seed},
      {"torch", TORCH_VERSION},
      {"blas_libraries", blas_libraries()},
      {"peak_tensor_mb", round_to(static_cast<double>(peak_tensor_bytes(device)) / 1048576.0, 1)},
      {"activation_checkpointing", o.activation_checkpointing},
      {"device", device.str()},
      {"timing", gpu ? "cuda events (phase times: host clock)" : "host clock"}};
  if (s.distributed) {
    r["strategy"] = o.strategy;
    r["ranks"] = s.ctx.world();
    r["prefetch"] = o.prefetch;
    r["reduce_dtype"] = o.reduce_dtype;
    r["comm_ms_median"] = round_to(median(t.comm_t), 3);
    r["comm_wait_ms_median"] = round_to(median(t.wait_t), 3);
  }
  if (gpu) {
    const cuda::MemoryStats mem = cuda::memory_stats(device.index());
    r["device_name"] = cuda::device_name(device.index());
    r["cuda_version"] = cuda::runtime_version();
    r["peak_cuda_allocated_mb"] = round_to(static_cast<double>(mem.allocated_peak) / 1048576.0, 1);
    r["peak_cuda_reserved_mb"] = round_to(static_cast<double>(mem.reserved_peak) / 1048576.0, 1);
  }
  if (o.peak_gflops) {
    r["peak_gflops"] = *o.peak_gflops;
    r["fraction_of_peak"] = round_to(gflops / *o.peak_gflops, 4);
    if (gpu) r["mfu"] = r["fraction_of_peak"];  // model FLOPs utilisation against the stated peak
  }
  return r;
}

}  // namespace

nlohmann::ordered_json run_bench(const BenchOptions& o) {
  nlohmann::ordered_json overrides = nlohmann::ordered_json::object();
  const Preset p = resolve_preset(o, overrides);
  const std::optional<config::DistStrategy> strategy = parse_strategy(o.strategy);
  const config::ReduceDtype reduce_dtype = parse_reduce_dtype(o.reduce_dtype);
  const dist::LaunchInfo launch = strategy ? dist::detect_launch() : dist::LaunchInfo{};
  config::TrainSpec ts;
  ts.threads = o.threads;
  ts.device = o.device;
  c10::Device device = setup_device(ts, launch);
  const int threads = at::get_num_threads();
  CpuMemoryTracker::install();
  const bool gpu = device.is_cuda();
  std::shared_ptr<dist::Context> ctx = make_context(strategy, launch, device);

  model::LlamaConfig cfg = model::LlamaConfig::from_json(model_json(p), "bench");
  // Built without storage and filled from the seeded init: a ZeRO-3 rank allocates its shards only.
  model::Llama model(cfg, device, c10::kFloat, /*materialize=*/false);
  model.set_activation_checkpointing(o.activation_checkpointing);
  const model::ParamSource init = model.init_source(o.seed);
  FlatAdamW opt(model, {0.9, 0.95, 1e-8, 0.1}, ctx->world(), ctx->rank(),
                strategy ? Sharding::for_strategy(*strategy) : Sharding{}, &init);
  const bool bf16 = config::parse_choice<config::ComputeDtype>(o.dtype) == config::ComputeDtype::kBf16;
  std::unique_ptr<DataParallel> dp;
  if (strategy) {
    DataParallelOptions dpo;
    dpo.strategy = *strategy;
    dpo.prefetch = o.prefetch;
    dpo.gather_dtype = bf16 ? c10::kBFloat16 : c10::kFloat;
    dpo.reduce_dtype = reduce_dtype == config::ReduceDtype::kBf16 ? c10::kBFloat16 : c10::kFloat;
    dp = std::make_unique<DataParallel>(model, opt, ctx, dpo);
  }

  const std::int64_t prompt = static_cast<std::int64_t>(0.3 * static_cast<double>(p.seq));
  const auto batches = random_batches(o, p, prompt, ctx->rank(), device);
  const std::int64_t trained_tokens_per_step = o.accum * p.batch * (p.seq - prompt) * ctx->world();
  ModelCounts n;
  n.n_params = model.num_parameters();
  n.n_nonemb = n.n_params - cfg.num_embedding_parameters();
  n.fpt = 6.0 * static_cast<double>(n.n_nonemb) + 12.0 * static_cast<double>(p.layers * p.seq * p.dim);
  n.tokens_per_step = p.batch * p.seq * o.accum;  // per rank
  sft::log::info(
      "[sft bench] preset={} dtype={} threads={} params={} tokens/step={}{}", o.preset, o.dtype, threads,
      n.n_params, n.tokens_per_step,
      strategy ? fmt::format(" strategy={} ranks={} prefetch={}", o.strategy, ctx->world(), o.prefetch) : "");

  const StepParts s{o,     device, gpu,      bf16,    strategy.has_value(),   *ctx,
                    model, opt,    dp.get(), batches, trained_tokens_per_step};
  // On a GPU the step is timed with CUDA events; the loss is read once, after the step.
  // Phase times stay host times (they include the few waits for the device inside the
  // step, e.g. the gradient-norm clip).
  std::unique_ptr<cuda::EventTimer> timer;
  if (gpu) timer = std::make_unique<cuda::EventTimer>(device);
  TraceRecorder trace(device);
  const Series t = run_steps(s, timer.get(), trace);
  if (trace.active()) {
    const std::string path = ctx->world() > 1 ? o.profile + ".rank" + std::to_string(ctx->rank()) : o.profile;
    trace.stop_and_save(path);
    sft::log::info("[sft bench] trace of the timed steps: {}", path);
  }
  return bench_report(o, p, overrides, s, threads, n, t);
}

}  // namespace sft::train
