#include "sft/dist/context.h"

#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>
#include <ATen/record_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if SFT_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if SFT_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <optional>
#include <thread>

#include "sft/dist/backend_check.h"
#include "sft/util/cuda.h"
#include "sft/util/error.h"
#include "sft/util/log.h"

namespace sft::dist {

// One collective's timing: its interval (launch to completion) and the waits for it.
struct Context::Launched {
  const char* what = "";
  std::int64_t window = 0;
  std::int64_t launched_ns = 0;
  std::atomic<std::int64_t> completed_ns{0};  // Gloo: set by the last of its works to finish
  std::atomic<int> unfinished{0};
  double waited_ms = 0;  // Gloo: the host's time in wait()
#if SFT_WITH_CUDA
  // NCCL: the collective on the communication stream, and each wait on a compute stream.
  std::unique_ptr<at::cuda::CUDAEvent> start, end;
  std::vector<std::pair<std::unique_ptr<at::cuda::CUDAEvent>, std::unique_ptr<at::cuda::CUDAEvent>>> waits;
#endif
};

struct Context::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;  // ProcessGroupGloo or ProcessGroupNCCL
  c10::Device device{c10::kCPU};         // the rank's device: its GPU under NCCL
  std::int64_t string_rounds = 0;        // all_gather_strings calls so far (their key prefix)
#if SFT_WITH_CUDA
  std::optional<c10::cuda::CUDAStream> comm;  // NCCL: the communication stream
#endif
  // Timing: collectives of open or unresolved windows, and the resolved windows' times.
  std::int64_t window = 0;
  std::deque<std::shared_ptr<Launched>> launched;
  std::vector<CommTimes> resolved;    // closed windows, oldest first
  std::int64_t first_unresolved = 0;  // the oldest closed window not in `resolved` yet
  std::deque<bool> kept;              // per closed window from first_kept_window: reported?
  std::int64_t first_kept_window = 0;
};

struct Context::Work::State {
  Context* ctx = nullptr;
  const char* what = "";
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  std::vector<at::Tensor> buffers;  // kept alive until waited: the backend reads and writes them
  std::shared_ptr<Launched> rec;
  bool done = true;
};

namespace {

// A c10 exception's message without the C++ stack trace LibTorch appends.
std::string first_line_of(const std::exception& e) {
  std::string msg = e.what();
  if (auto nl = msg.find("\nException raised from"); nl != std::string::npos) msg.resize(nl);
  return msg;
}

// A backend's failure in sft's words. Gloo's and NCCL's texts carry their source paths and
// internals ("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer
// [127.0.0.1]:41327"): the two causes a user acts on are named, anything else is passed on
// without its source location. sft's own errors (await's deadline) pass as they are.
std::string backend_cause(const std::exception& e) {
  if (dynamic_cast<const Error*>(&e)) return e.what();
  std::string msg = first_line_of(e);
  std::string lower = msg;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char ch) { return std::tolower(ch); });
  auto has = [&](const char* s) { return lower.find(s) != std::string::npos; };
  if (has("timed out") || has("timeout")) return "no reply from a peer within dist.timeout_s";
  if (has("connection closed") || has("connection reset") || has("broken pipe") ||
      has("connection refused") || has("end of file"))
    return "a peer closed the connection";
  while (msg.size() > 1 && msg[0] == '[') {
    const auto close = msg.find("] ");
    if (close == std::string::npos) break;
    msg.erase(0, close + 2);
  }
  return "the backend reported: " + msg;
}

std::string seconds_since(std::chrono::steady_clock::time_point t0) {
  return fmt::format("{:.1f}", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

// Runs a collective's launch + wait, turning any failure into an sft::Error that says
// which rank and collective, how long it waited, and why the job cannot continue. A failed
// NCCL group is aborted first: destroying it with a dead peer could otherwise block before
// the error is printed.
template <typename F>
void guarded(const Context& c, c10d::Backend* pg, const char* what, F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  try {
    f();
  } catch (const std::exception& e) {
    if (pg && c.backend() == config::Backend::kNccl) {
      try {
        pg->abort();
      } catch (...) {
      }
    }
    throw Error("rank " + std::to_string(c.rank()) + " of " + std::to_string(c.world()) + ": " + what +
                " failed after " + seconds_since(t0) + " s: " + backend_cause(e) +
                ", so a peer rank died, stalled past dist.timeout_s (" + std::to_string(c.timeout().count()) +
                " s per wait), or the network broke; the last good checkpoint stays valid: resume with "
                "--resume auto");
  }
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

[[maybe_unused]] bool is_loopback(const std::string& a) {
  return a == "localhost" || a.rfind("127.", 0) == 0 || a == "::1";
}

// dist.backend, with auto resolved: NCCL on a GPU, else Gloo.
config::Backend backend_for(config::Backend asked, c10::Device device) {
  return asked != config::Backend::kAuto ? asked
         : device.is_cuda()              ? config::Backend::kNccl
                                         : config::Backend::kGloo;
}

// The rendezvous store (rank 0's TCPStore, or torchrun's agent's), under a prefix of this
// restart's own. `t0`: when the rendezvous began.
c10::intrusive_ptr<c10d::Store> open_store(const LaunchInfo& launch, const config::DistSpec& spec,
                                           std::chrono::seconds timeout,
                                           std::chrono::steady_clock::time_point t0,
                                           const std::string& where) {
  c10d::TCPStoreOptions so;
  // A one-rank group outside a launcher hosts its own store: any free port will do.
  so.port = launch.world == 1 && !launch.agent_store ? 0 : static_cast<std::uint16_t>(launch.master_port);
  so.isServer = launch.rank == 0 && !launch.agent_store;  // torchrun >= 2 hosts the store in its agent
  if (!launch.agent_store) so.numWorkers = static_cast<std::size_t>(launch.world);
  // Rank 0 does not wait inside the store: it counts arrivals below, under the same deadline
  // and with the same message as every other rank.
  so.waitWorkers = false;
  so.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(timeout);
  c10::intrusive_ptr<c10d::Store> tcp;
  try {
    tcp = c10::make_intrusive<c10d::TCPStore>(launch.master_addr, so);
  } catch (const std::exception& e) {
    throw Error(
        "rank " + std::to_string(launch.rank) + " of " + std::to_string(launch.world) + ": rendezvous at " +
        where + " failed after " + seconds_since(t0) +
        " s (dist.timeout_s: " + std::to_string(spec.timeout_s) + " s): " + backend_cause(e) +
        "; check that rank 0 runs, that every rank has the same MASTER_ADDR/MASTER_PORT, and that this "
        "node reaches " +
        where);
  }
  const char* restart = std::getenv("TORCHELASTIC_RESTART_COUNT");
  return c10::make_intrusive<c10d::PrefixStore>(std::string("sft/") + (restart ? restart : "0"), tcp);
}

// Every rank counts in, then waits for the others until the common deadline.
void await_ranks(c10d::Store& store, const LaunchInfo& launch, const config::DistSpec& spec,
                 std::chrono::steady_clock::time_point deadline, const std::string& where) {
  try {
    std::int64_t arrived = store.add("arrived", 1);
    while (arrived < launch.world) {
      if (std::chrono::steady_clock::now() >= deadline)
        throw Error("rank " + std::to_string(launch.rank) + " of " + std::to_string(launch.world) +
                    ": rendezvous at " + where + ": " + std::to_string(arrived) + " of " +
                    std::to_string(launch.world) + " ranks arrived within " + std::to_string(spec.timeout_s) +
                    " s (dist.timeout_s); check that every rank was started with WORLD_SIZE=" +
                    std::to_string(launch.world) +
                    " and the same MASTER_ADDR/MASTER_PORT, that none failed at start " +
                    "(see their logs), and that the other nodes reach " + where);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      arrived = store.add("arrived", 0);
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error("rank " + std::to_string(launch.rank) + " of " + std::to_string(launch.world) +
                ": rendezvous at " + where + " broke (" + backend_cause(e) +
                "); check that rank 0 still runs");
  }
}

// The NCCL group of this rank's GPU (made its current device first).
c10::intrusive_ptr<c10d::Backend> nccl_group(const c10::intrusive_ptr<c10d::Store>& store,
                                             const LaunchInfo& launch, std::chrono::seconds timeout,
                                             c10::Device device) {
#if SFT_WITH_CUDA
  if (!device.is_cuda() || !device.has_index())
    throw ConfigError("dist.backend: nccl needs each rank on its own GPU (train.device: auto or cuda), not " +
                      device.str());
  // NCCL binds to the current device: make it this rank's GPU before the group exists,
  // and bind the group to it so that no collective has to guess.
  cuda::set_device(device.index());
  // sft runs every collective on a communication stream of its own (asyncOp false:
  // NCCL uses the caller's current stream) and orders it by events, so the host never
  // waits in a step; it waits only in drain(), where a collective that outlives
  // dist.timeout_s is reported by sft naming it. The watchdog must not kill the process
  // first (torchrun switches asynchronous error handling on), nor wait() block the host.
  ::setenv("TORCH_NCCL_BLOCKING_WAIT", "0", /*overwrite=*/1);
  ::setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "0", /*overwrite=*/1);
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = std::chrono::duration_cast<std::chrono::milliseconds>(timeout);
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, launch.rank, launch.world, opts);
  pg->setBoundDeviceId(device);
  return pg;
#else
  throw ConfigError(
      "dist.backend: nccl needs sft built against a LibTorch with CUDA (SFT_CUDA=ON); this build has none "
      "(use gloo)");
#endif
}

// The Gloo group (none when sft is built without Gloo), on GLOO_SOCKET_IFNAME's interface,
// the loopback for a local rendezvous, or the host's default.
c10::intrusive_ptr<c10d::Backend> gloo_group(const c10::intrusive_ptr<c10d::Store>& store,
                                             const LaunchInfo& launch, std::chrono::seconds timeout) {
#if SFT_WITH_GLOO
  auto opts =
      c10d::ProcessGroupGloo::Options::create(std::chrono::duration_cast<std::chrono::milliseconds>(timeout));
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"))
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  else if (is_loopback(launch.master_addr))
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  else
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  opts->threads = 2;
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, launch.rank, launch.world, opts);
#else
  return {};
#endif
}

}  // namespace

std::shared_ptr<Context> Context::single() {
  auto c = std::shared_ptr<Context>(new Context());
  c->impl_ = std::make_unique<Impl>();
  return c;
}

Context::Context() = default;

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

std::shared_ptr<Context> Context::create(const LaunchInfo& launch, const config::DistSpec& spec,
                                         c10::Device device) {
  auto c = std::shared_ptr<Context>(new Context());
  c->impl_ = std::make_unique<Impl>();
  c->launch_ = launch;
  c->rank_ = launch.rank;
  c->world_ = launch.world;
  c->timeout_ = std::chrono::seconds(spec.timeout_s);
  // One rank needs no group, unless dist.backend names one: then the collectives really
  // run (a one-rank NCCL group is how a single GPU checks the NCCL path).
  if (launch.world == 1 && spec.backend == config::Backend::kAuto) return c;

  const config::Backend backend = backend_for(spec.backend, device);
  c->backend_ = backend;
  require_backend(spec.backend, backend, launch.world, nccl_compiled(),
                  gloo_compiled());  // before any rank waits
  const auto deadline = std::chrono::steady_clock::now() + c->timeout_;
  const std::string where = launch.master_addr + ":" + std::to_string(launch.master_port);
  c->impl_->store = open_store(launch, spec, c->timeout_, deadline - c->timeout_, where);
  await_ranks(*c->impl_->store, launch, spec, deadline, where);

  if (backend == config::Backend::kNccl) {
    c->impl_->pg = nccl_group(c->impl_->store, launch, c->timeout_, device);
#if SFT_WITH_CUDA
    c->impl_->device = device;
    // High priority: a gather the next layer waits for goes ahead of queued compute.
    c->impl_->comm = c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device.index());
#endif
  } else {
    c->impl_->pg = gloo_group(c->impl_->store, launch, c->timeout_);
  }
  sft::log::info("dist: rank {}/{} (local {}), {} backend, rendezvous {}:{} via {}", launch.rank,
                 launch.world, launch.local_rank, config::name(backend), launch.master_addr,
                 launch.master_port, launcher_name(launch.launcher));
  return c;
}

// ---- collectives ----------------------------------------------------------------------------

Context::Work::Work() = default;
Context::Work::Work(Work&&) noexcept = default;

Context::Work& Context::Work::operator=(Work&& other) noexcept {
  if (this != &other) {
    if (pending()) {
      try {
        wait();
      } catch (const std::exception& e) {
        sft::log::error("{}", e.what());
      }
    }
    s_ = std::move(other.s_);
  }
  return *this;
}

Context::Work::~Work() {
  if (!pending()) return;
  try {
    wait();
  } catch (const std::exception& e) {  // unwinding from another failure: report, do not terminate
    sft::log::error("{}", e.what());
  }
}

bool Context::Work::pending() const { return s_ && !s_->done; }

void Context::Work::wait() {
  if (!pending()) return;
  State& st = *s_;
  Context& c = *st.ctx;
  st.done = true;                                          // a failure is reported once
  RECORD_USER_SCOPE(std::string("sft::wait ") + st.what);  // a span in a trace (train/trace.h)
#if SFT_WITH_CUDA
  if (c.impl_->comm) {
    // The current stream waits for the communication stream's event; timed on the stream.
    const auto cur = c10::cuda::getCurrentCUDAStream(c.impl_->device.index());
    auto before = std::make_unique<at::cuda::CUDAEvent>(cudaEventDefault);
    auto after = std::make_unique<at::cuda::CUDAEvent>(cudaEventDefault);
    before->record(cur);
    st.rec->end->block(cur);
    after->record(cur);
    st.rec->waits.emplace_back(std::move(before), std::move(after));
    st.works.clear();
    st.buffers.clear();  // recorded on the communication stream: reused only once it is past them
    return;
  }
#endif
  const std::int64_t t0 = now_ns();
  guarded(c, c.impl_->pg.get(), st.what, [&] {
    for (auto& w : st.works) w->wait();
  });
  const std::int64_t t1 = now_ns();
  st.rec->waited_ms += static_cast<double>(t1 - t0) / 1e6;
  std::int64_t unset = 0;
  st.rec->completed_ns.compare_exchange_strong(unset, t1);  // its completion callback may run a moment later
  st.works.clear();
  st.buffers.clear();
}

template <class F>
Context::Work Context::launch(const char* what, std::vector<at::Tensor> buffers, F&& collective) {
  RECORD_USER_SCOPE(std::string("sft::launch ") + what);
  Work w;
  w.s_ = std::make_unique<Work::State>();
  Work::State& st = *w.s_;
  st.ctx = this;
  st.what = what;
  st.done = false;
  auto rec = std::make_shared<Launched>();
  rec->what = what;
  rec->window = impl_->window;
  rec->launched_ns = now_ns();
  st.rec = rec;
  impl_->launched.push_back(rec);
#if SFT_WITH_CUDA
  if (impl_->comm) {
    // On the communication stream, after what the current stream has queued so far.
    const c10::cuda::CUDAStream comm = *impl_->comm;
    at::cuda::CUDAEvent ready;
    ready.record(c10::cuda::getCurrentCUDAStream(impl_->device.index()));
    ready.block(comm);
    rec->start = std::make_unique<at::cuda::CUDAEvent>(cudaEventDefault);
    rec->end = std::make_unique<at::cuda::CUDAEvent>(cudaEventDefault);
    rec->start->record(comm);
    {
      c10::cuda::CUDAStreamGuard on_comm(comm);
      guarded(*this, impl_->pg.get(), what, [&] { st.works = collective(/*async_op=*/false); });
    }
    // The buffers were allocated on the compute stream: the caching allocator must not hand
    // their memory out again before the communication stream is done with it.
    for (const at::Tensor& t : buffers)
      if (t.defined() && t.is_cuda() && t.storage().data())
        c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), comm);
    rec->end->record(comm);
    st.buffers = std::move(buffers);
    return w;
  }
#endif
  guarded(*this, impl_->pg.get(), what, [&] { st.works = collective(/*async_op=*/true); });
  // Gloo's worker threads complete the futures: the collective's end, timed where it happens.
  rec->unfinished = static_cast<int>(st.works.size());
  for (auto& work : st.works) {
    try {
      work->getFuture()->addCallback([rec](c10::ivalue::Future&) {
        if (--rec->unfinished != 0) return;
        std::int64_t unset = 0;
        rec->completed_ns.compare_exchange_strong(unset, now_ns());
      });
    } catch (const std::exception&) {
      // A backend without futures: the collective's end is taken when it is waited.
    }
  }
  st.buffers = std::move(buffers);
  return w;
}

using WorkList = std::vector<c10::intrusive_ptr<c10d::Work>>;

Context::Work Context::all_reduce_sum_async(at::Tensor t) {
  if (!impl_->pg) return Work();
  return launch("all-reduce", {t}, [&](bool async_op) {
    std::vector<at::Tensor> v{t};
    c10d::AllreduceOptions o;
    o.asyncOp = async_op;
    return WorkList{impl_->pg->allreduce(v, o)};
  });
}

Context::Work Context::all_gather_async(at::Tensor out, at::Tensor in) {
  if (!impl_->pg) {
    out.view({-1}).copy_(in.reshape({-1}));
    return Work();
  }
  TORCH_CHECK(out.numel() == in.numel() * world_, "all_gather: output must hold world x input elements");
  if (backend_ == config::Backend::kGloo && out.is_contiguous()) {
    // Gloo's all-gather goes through a flat output buffer of its own (and a copy of the
    // input): as many bytes again as the result. A broadcast from each rank in turn fills
    // `out` in place, so gathering a ZeRO-3 unit costs that unit and nothing more.
    const std::int64_t n = in.numel();
    at::Tensor flat = out.view({-1});
    flat.narrow(0, rank_ * n, n).copy_(in.reshape({-1}));
    return launch("all-gather", {out}, [&](bool) {
      WorkList works;
      for (int r = 0; r < world_; ++r) {
        std::vector<at::Tensor> part{flat.narrow(0, r * n, n)};
        c10d::BroadcastOptions o;
        o.rootRank = r;
        works.push_back(impl_->pg->broadcast(part, o));
      }
      return works;
    });
  }
  at::Tensor i = in.contiguous();
  return launch("all-gather", {out, i}, [&](bool async_op) {
    c10d::AllgatherOptions o;
    o.asyncOp = async_op;
    return WorkList{impl_->pg->_allgather_base(out, i, o)};
  });
}

Context::Work Context::reduce_scatter_sum_async(at::Tensor out, at::Tensor in) {
  const std::int64_t n = out.numel();
  if (!impl_->pg) {
    out.view({-1}).copy_(in.reshape({-1}).narrow(0, 0, n));
    return Work();
  }
  TORCH_CHECK(in.numel() == n * world_, "reduce_scatter: input must hold world x output elements");
  at::Tensor i = in.contiguous();
  return launch("reduce-scatter", {out, i}, [&](bool async_op) {
    c10d::ReduceScatterOptions o;
    o.asyncOp = async_op;
    return WorkList{impl_->pg->_reduce_scatter_base(out, i, o)};
  });
}

void Context::broadcast(at::Tensor& t, int root) {
  if (!impl_->pg) return;
  launch("broadcast", {t}, [&](bool async_op) {
    std::vector<at::Tensor> v{t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.asyncOp = async_op;
    return WorkList{impl_->pg->broadcast(v, o)};
  }).wait();
}

void Context::drain() {
#if SFT_WITH_CUDA
  if (!impl_->comm) return;
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  for (const auto& rec : impl_->launched) {
    if (!rec->end) continue;
    guarded(*this, impl_->pg.get(), rec->what, [&] {
      while (!rec->end->query()) {
        if (std::chrono::steady_clock::now() >= deadline)
          throw Error("not complete after " + std::to_string(timeout_.count()) + " s (dist.timeout_s)");
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
  }
#endif
}

void Context::await(const std::function<bool()>& done, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  guarded(*this, impl_->pg.get(), what, [&] {
    while (!done()) {
      if (std::chrono::steady_clock::now() >= deadline)
        throw Error("not complete after " + std::to_string(timeout_.count()) + " s (dist.timeout_s)");
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
}

void Context::barrier() {
  if (!impl_->pg) return;
  at::Tensor one = at::ones({1}, at::TensorOptions().dtype(at::kFloat).device(impl_->device));
  all_reduce_sum(one);
  drain();
}

double Context::all_reduce_scalar(double v) {
  if (!impl_->pg) return v;
  // fp64 on both backends: token counts above 2^24 stay exact (fp32 would round them).
  at::Tensor t = at::full({1}, v, at::TensorOptions().dtype(at::kDouble).device(impl_->device));
  all_reduce_sum(t);
  drain();
  return t.item<double>();
}

// ---- communication times ------------------------------------------------------------------

void Context::end_comm_window(bool keep) {
  impl_->kept.push_back(keep);
  ++impl_->window;
  resolve_comm_times(/*force=*/false);
}

std::vector<Context::CommTimes> Context::take_comm_times() {
  resolve_comm_times(/*force=*/true);
  std::vector<CommTimes> out = std::move(impl_->resolved);
  impl_->resolved.clear();
  return out;
}

// Folds each closed window whose collectives and waits have all completed (all of them when
// `force`) into its CommTimes, oldest first, and forgets their records.
void Context::resolve_comm_times(bool force) {
  auto& q = impl_->launched;
  while (impl_->first_unresolved < impl_->window) {
    const std::int64_t w = impl_->first_unresolved;
    std::size_t n = 0;
    while (n < q.size() && q[n]->window == w) ++n;
    auto done = [&](const Launched& r) {
#if SFT_WITH_CUDA
      if (r.end) {
        if (force) {
          r.end->synchronize();
          for (const auto& e : r.waits) e.second->synchronize();
          return true;
        }
        if (!r.end->query()) return false;
        for (const auto& e : r.waits)
          if (!e.second->query()) return false;
        return true;
      }
#endif
      return force || r.completed_ns.load() != 0;
    };
    for (std::size_t i = 0; i < n; ++i)
      if (!done(*q[i])) return;
    CommTimes t;
    t.collectives = static_cast<std::int64_t>(n);
    std::vector<std::pair<std::int64_t, std::int64_t>> spans;  // Gloo: host intervals
    for (std::size_t i = 0; i < n; ++i) {
      const Launched& r = *q[i];
#if SFT_WITH_CUDA
      if (r.end) {
        t.comm_ms += r.start->elapsed_time(*r.end);  // one stream: the intervals do not overlap
        for (const auto& e : r.waits) t.wait_ms += e.first->elapsed_time(*e.second);
        continue;
      }
#endif
      const std::int64_t end = r.completed_ns.load() != 0 ? r.completed_ns.load() : now_ns();
      spans.emplace_back(r.launched_ns, std::max(end, r.launched_ns));
      t.wait_ms += r.waited_ms;
    }
    // Gloo runs collectives on several threads at once: time in flight is their union.
    std::sort(spans.begin(), spans.end());
    std::int64_t covered = 0, open = 0, close = 0;
    for (const auto& [a, b] : spans) {
      if (a > close) {
        covered += close - open;
        open = a;
        close = b;
      } else {
        close = std::max(close, b);
      }
    }
    covered += close - open;
    t.comm_ms += static_cast<double>(covered) / 1e6;
    if (impl_->kept[static_cast<std::size_t>(w - impl_->first_kept_window)]) impl_->resolved.push_back(t);
    q.erase(q.begin(), q.begin() + static_cast<std::ptrdiff_t>(n));
    ++impl_->first_unresolved;
  }
  // Forget the keep flags of resolved windows.
  const auto gone = static_cast<std::ptrdiff_t>(impl_->first_unresolved - impl_->first_kept_window);
  impl_->kept.erase(impl_->kept.begin(), impl_->kept.begin() + gone);
  impl_->first_kept_window = impl_->first_unresolved;
}

std::vector<std::string> Context::all_gather_strings(const std::string& mine, std::chrono::seconds timeout) {
  if (!impl_->store) return {mine};
  const std::string base = "strings/" + std::to_string(impl_->string_rounds++) + "/";
  const auto wait =
      std::chrono::duration_cast<std::chrono::milliseconds>(timeout.count() > 0 ? timeout : timeout_);
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
