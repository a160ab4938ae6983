#include "sft/dist/context.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if SFT_WITH_CUDA
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <thread>

#include "sft/util/cuda.h"
#include "sft/util/error.h"
#include "sft/util/log.h"

namespace sft::dist {

struct Context::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;  // ProcessGroupGloo or ProcessGroupNCCL
  c10::Device scalar_device{c10::kCPU};  // where all_reduce_scalar's tensor lives
  std::int64_t string_rounds = 0;         // all_gather_strings calls so far (their key prefix)
};

namespace {

// A c10 exception's message without the C++ stack trace LibTorch appends.
std::string first_line_of(const std::exception& e) {
  std::string msg = e.what();
  if (auto nl = msg.find("\nException raised from"); nl != std::string::npos) msg.resize(nl);
  return msg;
}

// Runs a collective's launch + wait, turning any failure into an sft::Error that says
// which rank and collective, and why the job cannot continue. A failed NCCL group is
// aborted first: destroying it with a dead peer could otherwise block before the error
// is printed.
template <typename F>
void guarded(const Context& c, c10d::Backend* pg, const char* what, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    if (pg && c.backend() == config::Backend::kNccl) {
      try {
        pg->abort();
      } catch (...) {
      }
    }
    const std::string msg = first_line_of(e);
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

Context::~Context() {
  // A finished NCCL group is shut down explicitly, as PyTorch asks (its destructor warns
  // otherwise); after a failure guarded() has aborted it already.
  if (impl_ && impl_->pg && backend_ == config::Backend::kNccl) {
    try {
      impl_->pg->shutdown();
    } catch (...) {
    }
  }
}

std::shared_ptr<Context> Context::create(const LaunchInfo& launch, const config::DistSpec& spec, c10::Device device) {
  auto c = std::shared_ptr<Context>(new Context());
  c->impl_ = std::make_unique<Impl>();
  c->launch_ = launch;
  c->rank_ = launch.rank;
  c->world_ = launch.world;
  c->timeout_ = std::chrono::seconds(spec.timeout_s);
  // One rank needs no group, unless dist.backend names one: then the collectives really
  // run (a one-rank NCCL group is how a single GPU checks the NCCL path).
  if (launch.world == 1 && spec.backend == config::Backend::kAuto) return c;

  const config::Backend backend =
      spec.backend != config::Backend::kAuto ? spec.backend : device.is_cuda() ? config::Backend::kNccl : config::Backend::kGloo;
  c->backend_ = backend;
  const auto deadline = std::chrono::steady_clock::now() + c->timeout_;
  const std::string where = launch.master_addr + ":" + std::to_string(launch.master_port);
  c10d::TCPStoreOptions so;
  // A one-rank group outside a launcher hosts its own store: any free port will do.
  so.port = launch.world == 1 && !launch.agent_store ? 0 : static_cast<std::uint16_t>(launch.master_port);
  so.isServer = launch.rank == 0 && !launch.agent_store;  // torchrun >= 2 hosts the store in its agent
  if (!launch.agent_store) so.numWorkers = static_cast<std::size_t>(launch.world);
  // Rank 0 does not wait inside the store: it counts arrivals below, under the same deadline
  // and with the same message as every other rank.
  so.waitWorkers = false;
  so.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(c->timeout_);
  c10::intrusive_ptr<c10d::Store> tcp;
  try {
    tcp = c10::make_intrusive<c10d::TCPStore>(launch.master_addr, so);
  } catch (const std::exception& e) {
    const std::string msg = first_line_of(e);
    throw Error("rank " + std::to_string(launch.rank) + " of " + std::to_string(launch.world) + ": rendezvous at " +
                where + " failed within " + std::to_string(spec.timeout_s) + " s (dist.timeout_s): " + msg +
                "; check that rank 0 runs, that every rank has the same MASTER_ADDR/MASTER_PORT, and that this "
                "node reaches " + where);
  }
  const char* restart = std::getenv("TORCHELASTIC_RESTART_COUNT");
  c->impl_->store = c10::make_intrusive<c10d::PrefixStore>(std::string("sft/") + (restart ? restart : "0"), tcp);
  // Every rank counts in, then waits for the others until the common deadline.
  try {
    std::int64_t arrived = c->impl_->store->add("arrived", 1);
    while (arrived < launch.world) {
      if (std::chrono::steady_clock::now() >= deadline)
        throw Error("rank " + std::to_string(launch.rank) + " of " + std::to_string(launch.world) + ": rendezvous at " +
                    where + ": " + std::to_string(arrived) + " of " + std::to_string(launch.world) +
                    " ranks arrived within " + std::to_string(spec.timeout_s) +
                    " s (dist.timeout_s); check that every rank was started with WORLD_SIZE=" +
                    std::to_string(launch.world) + " and the same MASTER_ADDR/MASTER_PORT, that none failed at start " +
                    "(see their logs), and that the other nodes reach " + where);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      arrived = c->impl_->store->add("arrived", 0);
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    const std::string msg = first_line_of(e);
    throw Error("rank " + std::to_string(launch.rank) + " of " + std::to_string(launch.world) + ": rendezvous at " +
                where + " broke (" + msg + "); check that rank 0 still runs");
  }

  if (backend == config::Backend::kNccl) {
#if SFT_WITH_CUDA
    if (!device.is_cuda() || !device.has_index())
      throw ConfigError("dist.backend: nccl needs each rank on its own GPU (train.device: auto or cuda), not " +
                        device.str());
    // NCCL binds to the current device: make it this rank's GPU before the group exists,
    // and bind the group to it so that no collective has to guess.
    cuda::set_device(device.index());
    // Blocking wait: a collective that fails or outlives dist.timeout_s throws from wait()
    // on the calling thread, where guarded() names it. With asynchronous error handling
    // (which torchrun switches on) the watchdog thread would instead kill the process
    // with a log line of its own. sft therefore sets both. The cost is that wait()
    // blocks the host until the collective is done.
    ::setenv("TORCH_NCCL_BLOCKING_WAIT", "1", /*overwrite=*/1);
    ::setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "0", /*overwrite=*/1);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::duration_cast<std::chrono::milliseconds>(c->timeout_);
    c->impl_->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(c->impl_->store, launch.rank, launch.world, opts);
    c->impl_->pg->setBoundDeviceId(device);
    c->impl_->scalar_device = device;
#else
    throw ConfigError("dist.backend: nccl needs sft built against a LibTorch with CUDA (SFT_CUDA=ON); this build has none (use gloo)");
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
    c->impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(c->impl_->store, launch.rank, launch.world, opts);
  }
  sft::log::info("dist: rank {}/{} (local {}), {} backend, rendezvous {}:{} via {}", launch.rank, launch.world,
               launch.local_rank, config::name(backend), launch.master_addr, launch.master_port, launch.launcher);
  return c;
}

void Context::all_reduce_sum(at::Tensor& t) {
  if (!impl_->pg) return;
  all_reduce_sum_async(t).wait();
}

Context::Pending Context::all_reduce_sum_async(at::Tensor t) {
  if (!impl_->pg) return {[] {}};
  std::vector<at::Tensor> v{t};
  c10::intrusive_ptr<c10d::Work> work;
  guarded(*this, impl_->pg.get(), "all-reduce", [&] { work = impl_->pg->allreduce(v, c10d::AllreduceOptions()); });
  return {[this, work]() mutable { guarded(*this, impl_->pg.get(), "all-reduce", [&] { work->wait(); }); }};
}

void Context::broadcast(at::Tensor& t, int root) {
  if (!impl_->pg) return;
  std::vector<at::Tensor> v{t};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  guarded(*this, impl_->pg.get(), "broadcast", [&] { impl_->pg->broadcast(v, o)->wait(); });
}

void Context::all_gather(at::Tensor& out, const at::Tensor& in) {
  if (!impl_->pg) {
    out.copy_(in);
    return;
  }
  TORCH_CHECK(out.numel() == in.numel() * world_, "all_gather: output must hold world x input elements");
  if (backend_ == config::Backend::kGloo && out.is_contiguous()) {
    // Gloo's all-gather goes through a flat output buffer of its own (and a copy of the
    // input): as many bytes again as the result. A broadcast from each rank in turn fills
    // `out` in place, so gathering a ZeRO-3 unit costs that unit and nothing more.
    const std::int64_t n = in.numel();
    at::Tensor flat = out.view({-1});
    for (int r = 0; r < world_; ++r) {
      at::Tensor part = flat.narrow(0, r * n, n);
      if (r == rank_) part.copy_(in.reshape({-1}));
      broadcast(part, r);
    }
    return;
  }
  at::Tensor o = out, i = in.contiguous();
  guarded(*this, impl_->pg.get(), "all-gather", [&] { impl_->pg->_allgather_base(o, i)->wait(); });
}

void Context::reduce_scatter_sum(at::Tensor& out, const at::Tensor& in) {
  const std::int64_t n = out.numel();
  if (!impl_->pg) {
    out.copy_(in.view({-1}).narrow(0, 0, n));
    return;
  }
  TORCH_CHECK(in.numel() == n * world_, "reduce_scatter: input must hold world x output elements");
  at::Tensor o = out, i = in.contiguous();
  guarded(*this, impl_->pg.get(), "reduce-scatter", [&] { impl_->pg->_reduce_scatter_base(o, i)->wait(); });
}

void Context::barrier() {
  if (!impl_->pg) return;
  guarded(*this, impl_->pg.get(), "barrier", [&] { impl_->pg->barrier(c10d::BarrierOptions())->wait(); });
}

double Context::all_reduce_scalar(double v) {
  if (!impl_->pg) return v;
  // fp64 on both backends: token counts above 2^24 stay exact (fp32 would round them).
  at::Tensor t = at::full({1}, v, at::TensorOptions().dtype(at::kDouble).device(impl_->scalar_device));
  all_reduce_sum(t);
  return t.item<double>();
}

std::vector<std::string> Context::all_gather_strings(const std::string& mine, std::chrono::seconds timeout) {
  if (!impl_->store) return {mine};
  const std::string base = "strings/" + std::to_string(impl_->string_rounds++) + "/";
  const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(timeout.count() > 0 ? timeout : timeout_);
  std::vector<std::string> all;
  guarded(*this, nullptr, "exchange of settings", [&] {
    impl_->store->set(base + std::to_string(rank_), std::vector<std::uint8_t>(mine.begin(), mine.end()));
    std::vector<std::string> keys;
    for (int r = 0; r < world_; ++r) keys.push_back(base + std::to_string(r));
    impl_->store->wait(keys, wait);
    for (const auto& k : keys) {
      const std::vector<std::uint8_t> v = impl_->store->get(k);
      all.emplace_back(v.begin(), v.end());
    }
    // Read: count in. Rank 0 leaves last, so a store it hosts outlives every rank's reads.
    std::int64_t done = impl_->store->add(base + "done", 1);
    const auto deadline = std::chrono::steady_clock::now() + wait;
    while (rank_ == 0 && done < world_ && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      done = impl_->store->add(base + "done", 0);
    }
  });
  return all;
}

}  // namespace sft::dist
