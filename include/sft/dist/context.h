// Context: this rank's place in the job and its c10d process group (TCPStore rendezvous;
// ProcessGroupNCCL for CUDA tensors, ProcessGroupGloo on CPU). World size 1 needs no
// group (every collective is then a no-op) unless dist.backend names one explicitly.
//
// Rendezvous: every rank, rank 0 included, waits at most dist.timeout_s for all ranks to
// arrive, and one that times out says how many did, where, and what to check.
//
// Collectives block until done (the async one returns a handle) and throw sft::Error
// naming the collective and the rank when a peer dies or the timeout (dist.timeout_s)
// expires, so no rank hangs forever (NCCL runs with TORCH_NCCL_BLOCKING_WAIT=1 for that).
// Tensors are reduced in their own dtype (bf16 included) on both backends; scalars in fp64.
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
  static std::shared_ptr<Context> create(const LaunchInfo& launch, const config::DistSpec& spec, c10::Device device);
  static std::shared_ptr<Context> single();
  ~Context();

  int rank() const { return rank_; }
  int world() const { return world_; }
  int local_rank() const { return launch_.local_rank; }
  bool distributed() const { return world_ > 1; }
  config::Backend backend() const { return backend_; }  // kAuto: no process group
  const LaunchInfo& launch() const { return launch_; }

  // In place, summed over ranks.
  void all_reduce_sum(at::Tensor& t);
  // Starts a sum all-reduce; wait() finishes it.
  struct Pending {
    std::function<void()> wait;
  };
  Pending all_reduce_sum_async(at::Tensor t);
  void broadcast(at::Tensor& t, int root);
  // out (world * n) <- every rank's `in` (n), in rank order.
  void all_gather(at::Tensor& out, const at::Tensor& in);
  // out (n) <- sum over ranks of chunk `rank` of in (world * n).
  void reduce_scatter_sum(at::Tensor& out, const at::Tensor& in);
  void barrier();
  double all_reduce_scalar(double v);  // sum
  // Every rank's `mine`, in rank order, exchanged through the rendezvous store (small
  // values: settings, fingerprints, a refusal, generated answers). Collective: every rank
  // must call it. Waits up to `timeout` (0: dist.timeout_s) for the others; rank 0 returns
  // only once every rank has read (it may host the store, which must outlive their reads).
  std::vector<std::string> all_gather_strings(const std::string& mine,
                                              std::chrono::seconds timeout = std::chrono::seconds(0));

 private:
  Context() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  LaunchInfo launch_;
  int rank_ = 0, world_ = 1;
  config::Backend backend_ = config::Backend::kAuto;
  std::chrono::seconds timeout_{60};
};

}  // namespace sft::dist
