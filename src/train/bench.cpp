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

}  // namespace

nlohmann::ordered_json run_bench(const BenchOptions& o) {
  auto it = kPresets.find(o.preset);
  if (it == kPresets.end())
    throw ConfigError("--preset: \"" + o.preset + "\" is not one of tiny, small, gqa, 1b");
  Preset p = it->second;
  nlohmann::ordered_json overrides = nlohmann::ordered_json::object();
  for (const auto& [k, v] : o.overrides) {
    if (k == "dim")
      p.dim = v;
    else if (k == "layers")
      p.layers = v;
    else if (k == "heads")
      p.heads = v;
    else if (k == "kv-heads")
      p.kv_heads = v;
    else if (k == "vocab")
      p.vocab = v;
    else if (k == "ffn")
      p.ffn = v;
    else if (k == "seq")
      p.seq = v;
    else if (k == "batch")
      p.batch = v;
    overrides[k == "kv-heads" ? "kv_heads" : k] = v;
  }
  if (p.dim % p.heads) throw ConfigError("--dim " + std::to_string(p.dim) + " is not divisible by --heads");
  if ((p.dim / p.heads) % 2) throw ConfigError("head_dim must be even for rotary embeddings");
  if (p.heads % p.kv_heads) throw ConfigError("--heads must be a multiple of --kv-heads");

  // A strategy: the trainer's data-parallel step over a process group (a one-rank group when
  // not launched as several ranks).
  std::optional<config::DistStrategy> strategy;
  if (!o.strategy.empty()) {
    strategy = config::parse_choice<config::DistStrategy>(o.strategy);
    if (!strategy)
      throw ConfigError("--strategy: \"" + o.strategy + "\" is not one of " +
                        config::choice_list<config::DistStrategy>());
  }
  const auto reduce_dtype = config::parse_choice<config::ReduceDtype>(o.reduce_dtype);
  if (!reduce_dtype)
    throw ConfigError("--reduce-dtype: \"" + o.reduce_dtype + "\" is not one of " +
                      config::choice_list<config::ReduceDtype>());
  const dist::LaunchInfo launch = strategy ? dist::detect_launch() : dist::LaunchInfo{};
  config::TrainSpec ts;
  ts.threads = o.threads;
  ts.device = o.device;
  c10::Device device = setup_device(ts, launch);
  const int threads = at::get_num_threads();
  CpuMemoryTracker::install();
  const bool gpu = device.is_cuda();

  std::shared_ptr<dist::Context> ctx = dist::Context::single();
  if (strategy) {
    config::DistSpec ds;
    ds.strategy = *strategy;
    ds.backend = gpu ? config::Backend::kNccl : config::Backend::kGloo;
    ds.timeout_s = 600;
    ctx = dist::Context::create(launch, ds, device);
  }

  nlohmann::json mc = {{"hidden_size", p.dim},
                       {"intermediate_size", p.ffn},
                       {"num_hidden_layers", p.layers},
                       {"num_attention_heads", p.heads},
                       {"num_key_value_heads", p.kv_heads},
                       {"vocab_size", p.vocab},
                       {"max_position_embeddings", p.seq},
                       {"rms_norm_eps", 1e-5},
                       {"rope_theta", 10000.0}};
  model::LlamaConfig cfg = model::LlamaConfig::from_json(mc, "bench");
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
    dpo.reduce_dtype = *reduce_dtype == config::ReduceDtype::kBf16 ? c10::kBFloat16 : c10::kFloat;
    dp = std::make_unique<DataParallel>(model, opt, ctx, dpo);
  }

  // Fixed micro-batches of random tokens (each rank its own); the first 30% of each sequence is prompt.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed + static_cast<std::uint64_t>(ctx->rank()));
  const std::int64_t prompt = static_cast<std::int64_t>(0.3 * static_cast<double>(p.seq));
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
  const std::int64_t targets_per_step = o.accum * p.batch * (p.seq - prompt) * ctx->world();

  const std::int64_t n_params = model.num_parameters();
  const std::int64_t n_nonemb = n_params - cfg.num_embedding_parameters();
  const double fpt =
      6.0 * static_cast<double>(n_nonemb) + 12.0 * static_cast<double>(p.layers * p.seq * p.dim);
  const std::int64_t tokens_per_step = p.batch * p.seq * o.accum;  // per rank
  sft::log::info(
      "[sft bench] preset={} dtype={} threads={} params={} tokens/step={}{}", o.preset, o.dtype, threads,
      n_params, tokens_per_step,
      strategy ? fmt::format(" strategy={} ranks={} prefetch={}", o.strategy, ctx->world(), o.prefetch) : "");

  // On a GPU the step is timed with CUDA events; the loss is read once, after the step.
  // Phase times stay host times (they include the few waits for the device inside the
  // step, e.g. the gradient-norm clip).
  std::unique_ptr<cuda::EventTimer> timer;
  if (gpu) timer = std::make_unique<cuda::EventTimer>(device);
  TraceRecorder trace(device);
  std::vector<double> step_times, fwd_t, bwd_t, opt_t, losses, comm_t, wait_t;
  for (std::int64_t step = 0; step < o.warmup + o.steps; ++step) {
    if (gpu && step == o.warmup) reset_peak_tensor_bytes(device);
    if (!o.profile.empty() && step == o.warmup) trace.start();
    ctx->drain();
    cuda::synchronize(device);
    ctx->end_comm_window(/*keep=*/false);
    auto t0 = Clock::now();
    if (gpu) timer->start();
    double fwd = 0, bwd = 0;
    at::Tensor loss_total = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
    opt.zero_grad();
    if (dp) dp->begin_step();
    for (std::size_t m = 0; m < batches.size(); ++m) {
      const auto& b = batches[m];
      auto a = Clock::now();
      if (dp) dp->begin_micro(m + 1 == batches.size());
      at::Tensor loss;
      {
        model::AutocastGuard autocast(device, c10::kBFloat16, bf16);
        loss = model.loss_sum(b[0], b[1], at::Tensor(), b[2], b[3]);
      }
      auto mid = Clock::now();
      (loss / static_cast<double>(targets_per_step)).backward();
      auto e = Clock::now();
      fwd += std::chrono::duration<double>(mid - a).count();
      bwd += std::chrono::duration<double>(e - mid).count();
      loss_total += loss.detach().to(at::kDouble);
    }
    auto o0 = Clock::now();
    if (dp) dp->finish_gradients();
    ctx->all_reduce_sum(loss_total);
    opt.clip_grad_norm_on_device(1.0, ctx.get());
    opt.step(2e-5);
    if (dp) dp->after_step();
    ctx->end_comm_window(/*keep=*/true);
    double optim = std::chrono::duration<double>(Clock::now() - o0).count();
    ctx->drain();
    double elapsed =
        gpu ? timer->stop_ms() / 1000.0 : std::chrono::duration<double>(Clock::now() - t0).count();
    const dist::Context::CommTimes comm = ctx->take_comm_times().at(0);
    // The reference reports the mean of per-micro-batch mean losses; ours equals it for equal-size
    // micro-batches.
    losses.push_back(loss_total.item<double>() / static_cast<double>(targets_per_step));
    const bool timed = step >= o.warmup;
    if (timed) {
      step_times.push_back(elapsed);
      fwd_t.push_back(fwd);
      bwd_t.push_back(bwd);
      opt_t.push_back(optim);
      comm_t.push_back(comm.comm_ms);
      wait_t.push_back(comm.wait_ms);
    }
    sft::log::info(
        "[sft bench] step {:3d} {} loss {:.6f} {:.3f}s{}", step, timed ? "timed " : "warmup", losses.back(),
        elapsed,
        strategy ? fmt::format(" comm {:.1f} ms, waited {:.1f} ms", comm.comm_ms, comm.wait_ms) : "");
  }
  if (trace.active()) {
    const std::string path = ctx->world() > 1 ? o.profile + ".rank" + std::to_string(ctx->rank()) : o.profile;
    trace.stop_and_save(path);
    sft::log::info("[sft bench] trace of the timed steps: {}", path);
  }
  const double step_s = median(step_times);
  const double tps = static_cast<double>(tokens_per_step) / step_s;
  const double gflops = fpt * tps / 1e9;
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  auto round_to = [](double v, int d) {
    double f = std::pow(10.0, d);
    return std::round(v * f) / f;
  };
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  for (double t : step_times) all.push_back(round_to(t, 4));
  nlohmann::ordered_json r = {
      {"impl", "sft"},
      {"preset", o.preset},
      {"dtype", o.dtype},
      {"params", n_params},
      {"tokens_per_step", tokens_per_step},
      {"step_s_median", round_to(step_s, 6)},
      {"tokens_per_s", round_to(tps, 2)},
      {"peak_rss_mb", round_to(static_cast<double>(ru.ru_maxrss) / 1024.0, 1)},
      {"flops_per_token", static_cast<std::int64_t>(fpt)},
      {"achieved_gflops", round_to(gflops, 3)},
      {"loss_first", round_to(losses.front(), 6)},
      {"loss_last", round_to(losses.back(), 6)},
      {"params_nonembedding", n_nonemb},
      {"flops_formula", "6*N_nonembedding + 12*layers*seq*heads*head_dim"},
      {"step_s_min", round_to(*std::min_element(step_times.begin(), step_times.end()), 6)},
      {"step_s_all", all},
      {"phase_s_median",
       {{"fwd", round_to(median(fwd_t), 6)},
        {"bwd", round_to(median(bwd_t), 6)},
        {"opt", round_to(median(opt_t), 6)}}},
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
  if (strategy) {
    r["strategy"] = o.strategy;
    r["ranks"] = ctx->world();
    r["prefetch"] = o.prefetch;
    r["reduce_dtype"] = o.reduce_dtype;
    r["comm_ms_median"] = round_to(median(comm_t), 3);
    r["comm_wait_ms_median"] = round_to(median(wait_t), 3);
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

}  // namespace sft::train
