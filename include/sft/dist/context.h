// Context: this rank's place in the job and its c10d process group (TCPStore rendezvous;
// ProcessGroupNCCL for CUDA tensors, ProcessGroupGloo on CPU). World size 1 needs no
// group (every collective is then a no-op) unless dist.backend names one explicitly.
//
// Rendezvous: every rank, rank 0 included, waits at most dist.timeout_s for all ranks to
// arrive, and one that times out says how many did, where, and what to check.
//
// Collectives are launched asynchronously (the *_async calls return a Work) and are
// finished by Work::wait(), which makes the result usable by what this rank does next:
//   Gloo  the host blocks until the collective is done (its worker threads run it while
//         the caller computes).
//   NCCL  every collective runs on one communication stream of this rank's GPU, ordered
//         after the work queued on the current stream when it was launched; wait() makes
//         the current stream wait for it (CUDA events) and the host goes on. Buffers used
//         on the communication stream are recorded with the caching allocator.
// The blocking forms (all_reduce_sum, all_gather, ...) are launch + wait. The host itself
// waits only in drain(), barrier() and all_reduce_scalar(): for at most dist.timeout_s,
// then they throw sft::Error naming the collective and the rank (a peer died or stalled),
// so no rank hangs forever; so does a Gloo wait. Tensors are reduced in their own dtype
// (bf16 included) on both backends; scalars in fp64.
//
// Every collective's interval (launch to completion) and every wait are timed, per window
// (a training step): take_comm_times() reports how long collectives were in flight and how
// long the compute waited for them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sft/config/run_config.h"
#include "sft/dist/launch.h"

namespace sft::dist {

class Context {
 public:
  // REQUIRES: every rank calls this with the same world size. `device` decides the
  // backend under dist.backend: auto (NCCL for CUDA, Gloo for CPU).
  static std::shared_ptr<Context> create(const LaunchInfo& launch, const config::DistSpec& spec,
                                         c10::Device device);
  static std::shared_ptr<Context> single();
  ~Context();

  int rank() const { return rank_; }
  int world() const { return world_; }
  int local_rank() const { return launch_.local_rank; }
  bool distributed() const { return world_ > 1; }
  config::Backend backend() const { return backend_; }       // kAuto: no process group
  std::chrono::seconds timeout() const { return timeout_; }  // dist.timeout_s: each wait's limit
  const LaunchInfo& launch() const { return launch_; }

  // A launched collective. Move-only; one that is destroyed unwaited is waited then (a
  // collective is never abandoned while its buffers may still be read or written).
  class Work {
   public:
    Work();
    Work(Work&&) noexcept;
    Work& operator=(Work&&) noexcept;
    ~Work();
    void wait();  // idempotent
    bool pending() const;

   private:
    friend class Context;
    struct State;
    std::unique_ptr<State> s_;
  };

  // In place, summed over ranks.
  Work all_reduce_sum_async(at::Tensor t);
  // out (world * n) <- every rank's `in` (n), in rank order. `in` is read when the
  // collective runs: the caller keeps it unchanged until wait().
  Work all_gather_async(at::Tensor out, at::Tensor in);
  // out (n) <- sum over ranks of chunk `rank` of in (world * n).
  Work reduce_scatter_sum_async(at::Tensor out, at::Tensor in);

  void all_reduce_sum(at::Tensor& t) { all_reduce_sum_async(t).wait(); }
  void all_gather(at::Tensor& out, const at::Tensor& in) { all_gather_async(out, in).wait(); }
  void reduce_scatter_sum(at::Tensor& out, const at::Tensor& in) { reduce_scatter_sum_async(out, in).wait(); }
  void broadcast(at::Tensor& t, int root);
  // The host waits (at most dist.timeout_s) until every collective launched so far is done.
  void drain();
  // The host waits (at most dist.timeout_s) until `done()` (e.g. a copy of a collective's
  // result reached the host), failing as a collective does, naming `what`.
  void await(const std::function<bool()>& done, const char* what);
  void barrier();
  double all_reduce_scalar(double v);  // sum
  // Every rank's `mine`, in rank order, exchanged through the rendezvous store (small
  // values: settings, fingerprints, a refusal, generated answers). Collective: every rank
  // must call it. Waits up to `timeout` (0: dist.timeout_s) for the others; rank 0 returns
  // only once every rank has read (it may host the store, which must outlive their reads).
  std::vector<std::string> all_gather_strings(const std::string& mine,
                                              std::chrono::seconds timeout = std::chrono::seconds(0));

  // Communication of one window of work (a training step).
  struct CommTimes {
    double comm_ms = 0;  // time at least one collective was in flight (launch to completion)
    double wait_ms = 0;  // time the compute waited in Work::wait() (the host on Gloo, the stream on NCCL)
    std::int64_t collectives = 0;
  };
  // Closes the current window (its collectives stay timed until they complete); a window
  // not kept is not reported (work between steps).
  void end_comm_window(bool keep = true);
  // The kept closed windows' times, oldest first, and forgets them. On NCCL the times come from
  // CUDA events: REQUIRES every closed window's collectives and waits to have completed
  // (after drain(), or a host read of later work).
  std::vector<CommTimes> take_comm_times();

 private:
  Context();
  struct Impl;
  struct Launched;
  // Launches `collective` (which calls the process group) as one timed collective.
  template <class F>
  Work launch(const char* what, std::vector<at::Tensor> buffers, F&& collective);
  void resolve_comm_times(bool force);
  std::unique_ptr<Impl> impl_;
  LaunchInfo launch_;
  int rank_ = 0, world_ = 1;
  config::Backend backend_ = config::Backend::kAuto;
  std::chrono::seconds timeout_{60};
};

}  // namespace sft::dist
