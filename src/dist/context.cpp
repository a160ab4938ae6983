#include "sft/dist/context.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>

#include "sft/util/error.h"

namespace sft::dist {

struct Context::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#ifdef USE_C10D_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif
};

namespace {

// Runs a collective's launch + wait, turning any failure into an sft::Error that says
// which rank and collective, and why the job cannot continue.
template <typename F>
void guarded(const Context& c, const char* what, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (auto nl = msg.find("\nException raised from"); nl != std::string::npos) msg.resize(nl);
    throw Error("rank " + std::to_string(c.rank()) + " of " + std::to_string(c.world()) + ": " + what +
                " failed, so a peer rank died, stalled past dist.timeout_s, or the network broke (" + msg +
                "); the last good checkpoint stays valid: resume with --resume auto");
  }
}

bool is_loopback(const std::string& a) { return a == "localhost" || a.rfind("127.", 0) == 0 || a == "::1"; }

}  // namespace

std::shared_ptr<Context> Context::single() {
  auto c = std::shared_ptr<Context>(new Context());
  c->impl_ = std::make_unique<Impl>();
  return c;
}

Context::~Context() = default;

std::shared_ptr<Context> Context::create(const LaunchInfo& launch, const config::DistSpec& spec, c10::Device device) {
  auto c = std::shared_ptr<Context>(new Context());
  c->impl_ = std::make_unique<Impl>();
  c->launch_ = launch;
  c->rank_ = launch.rank;
  c->world_ = launch.world;
  c->timeout_ = std::chrono::seconds(spec.timeout_s);
  if (launch.world == 1) return c;

  std::string backend = spec.backend == "auto" ? (device.is_cuda() ? "nccl" : "gloo") : spec.backend;
  c->backend_ = backend;
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(launch.master_port);
  so.isServer = launch.rank == 0 && !launch.agent_store;  // torchrun >= 2 hosts the store in its agent
  if (!launch.agent_store) so.numWorkers = static_cast<std::size_t>(launch.world);
  so.waitWorkers = !launch.agent_store;
  so.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(c->timeout_);
  c10::intrusive_ptr<c10d::Store> tcp;
  try {
    tcp = c10::make_intrusive<c10d::TCPStore>(launch.master_addr, so);
  } catch (const std::exception& e) {
    throw Error("rank " + std::to_string(launch.rank) + ": rendezvous at " + launch.master_addr + ":" +
                std::to_string(launch.master_port) + " failed within " + std::to_string(spec.timeout_s) +
                " s (are all " + std::to_string(launch.world) + " ranks started, and MASTER_ADDR/MASTER_PORT right?): " +
                e.what());
  }
  const char* restart = std::getenv("TORCHELASTIC_RESTART_COUNT");
  c->impl_->store = c10::make_intrusive<c10d::PrefixStore>(std::string("sft/") + (restart ? restart : "0"), tcp);

  if (backend == "nccl") {
#ifdef USE_C10D_NCCL
    if (!std::getenv("TORCH_NCCL_ASYNC_ERROR_HANDLING")) ::setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1", 0);
    if (!std::getenv("NCCL_ASYNC_ERROR_HANDLING")) ::setenv("NCCL_ASYNC_ERROR_HANDLING", "1", 0);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::duration_cast<std::chrono::milliseconds>(c->timeout_);
    c->impl_->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(c->impl_->store, launch.rank, launch.world, opts);
#else
    throw ConfigError("dist.backend: nccl needs a LibTorch built with CUDA and NCCL; this one has neither (use gloo)");
#endif
  } else {
    auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::duration_cast<std::chrono::milliseconds>(c->timeout_));
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"))
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (is_loopback(launch.master_addr))
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    opts->threads = 2;
    c->impl_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(c->impl_->store, launch.rank, launch.world, opts);
  }
  spdlog::info("dist: rank {}/{} (local {}), {} backend, rendezvous {}:{} via {}", launch.rank, launch.world,
               launch.local_rank, backend, launch.master_addr, launch.master_port, launch.launcher);
  return c;
}

#ifdef USE_C10D_NCCL
#define SFT_PG_CALL(method, ...) (impl_->nccl ? impl_->nccl->method(__VA_ARGS__) : impl_->gloo->method(__VA_ARGS__))
#else
#define SFT_PG_CALL(method, ...) (impl_->gloo->method(__VA_ARGS__))
#endif

void Context::all_reduce_sum(at::Tensor& t) {
  if (world_ == 1) return;
  all_reduce_sum_async(t).wait();
}

Context::Pending Context::all_reduce_sum_async(at::Tensor t) {
  if (world_ == 1) return {[] {}};
  const bool widen = backend_ == "gloo" && (t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf);
  at::Tensor buf = widen ? t.to(at::kFloat) : t;  // Gloo has no bf16 sum; fp16 sums are slow
  std::vector<at::Tensor> v{buf};
  c10::intrusive_ptr<c10d::Work> work;
  guarded(*this, "all-reduce", [&] { work = SFT_PG_CALL(allreduce, v, c10d::AllreduceOptions()); });
  return {[this, work, buf, t, widen]() mutable {
    guarded(*this, "all-reduce", [&] { work->wait(); });
    if (widen) t.copy_(buf);
  }};
}

void Context::broadcast(at::Tensor& t, int root) {
  if (world_ == 1) return;
  std::vector<at::Tensor> v{t};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  guarded(*this, "broadcast", [&] { SFT_PG_CALL(broadcast, v, o)->wait(); });
}

void Context::all_gather(at::Tensor& out, const at::Tensor& in) {
  if (world_ == 1) {
    out.copy_(in);
    return;
  }
  const std::int64_t n = in.numel();
  TORCH_CHECK(out.numel() == n * world_, "all_gather: output must hold world x input elements");
#ifdef USE_C10D_NCCL
  if (impl_->nccl) {
    at::Tensor o = out, i = in;
    guarded(*this, "all-gather", [&] { impl_->nccl->_allgather_base(o, i)->wait(); });
    return;
  }
#endif
  std::vector<std::vector<at::Tensor>> outs(1);
  for (int r = 0; r < world_; ++r) outs[0].push_back(out.narrow(0, r * n, n));
  std::vector<at::Tensor> ins{in.contiguous()};
  guarded(*this, "all-gather", [&] { impl_->gloo->allgather(outs, ins)->wait(); });
}

void Context::reduce_scatter_sum(at::Tensor& out, const at::Tensor& in) {
  const std::int64_t n = out.numel();
  if (world_ == 1) {
    out.copy_(in.view({-1}).narrow(0, 0, n));
    return;
  }
  TORCH_CHECK(in.numel() == n * world_, "reduce_scatter: input must hold world x output elements");
#ifdef USE_C10D_NCCL
  if (impl_->nccl) {
    at::Tensor o = out, i = in;
    guarded(*this, "reduce-scatter", [&] { impl_->nccl->_reduce_scatter_base(o, i)->wait(); });
    return;
  }
#endif
  // Gloo (1.13) has no reduce_scatter: exchange chunk r of every rank with all-to-all, sum locally.
  at::Tensor src = in.to(at::kFloat).contiguous().view({-1});
  at::Tensor recv = at::empty_like(src);
  std::vector<std::int64_t> splits;
  guarded(*this, "reduce-scatter (all-to-all)", [&] {
    impl_->gloo->alltoall_base(recv, src, splits, splits, c10d::AllToAllOptions())->wait();
  });
  out.copy_(recv.view({world_, n}).sum(0));
}

void Context::barrier() {
  if (world_ == 1) return;
  guarded(*this, "barrier", [&] { SFT_PG_CALL(barrier, c10d::BarrierOptions())->wait(); });
}

double Context::all_reduce_scalar(double v) {
  if (world_ == 1) return v;
  at::Tensor t = at::scalar_tensor(v, at::TensorOptions().dtype(at::kDouble));
  if (impl_->gloo) {
    all_reduce_sum(t);
    return t.item<double>();
  }
  at::Tensor f = t.to(at::kFloat).view({1});
#ifdef USE_C10D_NCCL
  f = f.to(at::Device(at::kCUDA, launch_.local_rank));
#endif
  all_reduce_sum(f);
  return f.item<double>();
}

}  // namespace sft::dist
