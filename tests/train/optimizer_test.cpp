// FlatAdamW against LibTorch's own AdamW, and the learning-rate schedules against the
// Hugging Face formulas.
#include "sft/train/optimizer.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/optim/adamw.h>

#include <cmath>

#include "sft/model/hf_checkpoint.h"
#include "test_util.h"

namespace sft::train {
namespace {

TEST(FlatAdamW, MatchesTorchOptimAdamWWithDecoupledDecayOnMatricesOnly) {
  const std::string dir = test::source_dir() + "/tests/fixtures/reference/gqa_bf16_sharded";
  auto a = model::load_hf_model(dir), b = model::load_hf_model(dir);
  FlatAdamW flat(*a, {0.9, 0.95, 1e-8, 0.1});
  std::vector<at::Tensor> decay, no_decay;
  for (const auto& p : b->parameters()) (p.tensor.dim() >= 2 ? decay : no_decay).push_back(p.tensor);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay,
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(1e-3).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1)));
  groups.emplace_back(no_decay,
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(1e-3).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0)));
  torch::optim::AdamW ref(groups, torch::optim::AdamWOptions(1e-3));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  for (int step = 0; step < 3; ++step) {
    flat.zero_grad();
    ref.zero_grad();
    for (std::size_t i = 0; i < a->parameters().size(); ++i) {
      at::Tensor g = at::randn(a->parameters()[i].tensor.sizes(), gen);
      a->parameters()[i].tensor.mutable_grad().copy_(g);  // a view of the flat gradient buffer
      b->parameters()[i].tensor.mutable_grad() = g.clone();
    }
    flat.step(1e-3);
    ref.step();
  }
  for (std::size_t i = 0; i < a->parameters().size(); ++i)
    EXPECT_TRUE(at::allclose(a->parameters()[i].tensor, b->parameters()[i].tensor, 1e-6, 1e-7))
        << a->parameters()[i].name;
}

// The CUDA path (ATen's fused AdamW, called per decayed / undecayed sub-range) computes what
// the CPU's one-pass loop computes, to fp32 rounding: whole buffers (DDP) and a ZeRO
// rank's chunks, whose ranges cut through parameters and decay boundaries. ATen's fused
// kernel also runs on the CPU, which is how it is checked here.
TEST(FlatAdamW, TheFusedKernelMatchesTheOnePassLoop) {
  const std::string dir = test::source_dir() + "/tests/fixtures/reference/gqa_bf16_sharded";
  for (config::DistStrategy strategy : {config::DistStrategy::kDdp, config::DistStrategy::kZero1}) {
    auto a = model::load_hf_model(dir), b = model::load_hf_model(dir);
    FlatAdamW loop(*a, {0.9, 0.95, 1e-8, 0.1}, 2, 1, Sharding::for_strategy(strategy));
    FlatAdamW fused(*b, {0.9, 0.95, 1e-8, 0.1}, 2, 1, Sharding::for_strategy(strategy));
    fused.set_fused(true);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
    for (int step = 0; step < 4; ++step) {
      at::Tensor g = at::randn(loop.grads().sizes(), gen);
      loop.grads().copy_(g);
      fused.grads().copy_(g);
      loop.step(1e-3 * (step + 1));
      fused.step(1e-3 * (step + 1));
    }
    // The two round differently (observed max difference 1e-7): both paths ran.
    EXPECT_FALSE(at::equal(loop.params(), fused.params()))
        << config::name(strategy) << ": the fused path did not run";
    EXPECT_TRUE(at::allclose(loop.params(), fused.params(), 1e-6, 1e-7)) << config::name(strategy);
    EXPECT_TRUE(at::allclose(loop.exp_avg(), fused.exp_avg(), 1e-6, 1e-7)) << config::name(strategy);
    EXPECT_TRUE(at::allclose(loop.exp_avg_sq(), fused.exp_avg_sq(), 1e-6, 1e-9)) << config::name(strategy);
  }
}

// A step that reads nothing back (the CUDA path): the clipped gradients and the norm read
// back are the device's bits, a step flagged non-finite on the device updates nothing and is
// not counted (the fused kernel's own found_inf, run on the CPU here), and every other step
// equals one the host decided to take.
TEST(FlatAdamW, ClippingAndSkippingOnTheDeviceMatchTheHostPath) {
  const std::string dir = test::source_dir() + "/tests/fixtures/reference/gqa_bf16_sharded";
  auto a = model::load_hf_model(dir), b = model::load_hf_model(dir);
  FlatAdamW host(*a, {0.9, 0.95, 1e-8, 0.1}), device(*b, {0.9, 0.95, 1e-8, 0.1});
  device.set_fused(true);
  host.set_fused(true);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  for (int step = 0; step < 5; ++step) {
    at::Tensor g = at::randn(host.grads().sizes(), gen) * (step % 2 ? 10.0 : 1e-3);  // clipped, then not
    host.grads().copy_(g);
    device.grads().copy_(g);
    const double norm = host.clip_grad_norm(1.0);
    const at::Tensor dnorm = device.clip_grad_norm_on_device(1.0);
    EXPECT_EQ(dnorm.item<double>(), norm) << step;
    EXPECT_TRUE(at::equal(host.grads(), device.grads())) << step;
    const bool skip = step == 3;
    if (!skip) host.step(1e-3);
    device.step(1e-3, at::full({}, skip, at::kBool));
    EXPECT_TRUE(at::equal(host.params(), device.params())) << step;
    EXPECT_TRUE(at::equal(host.exp_avg_sq(), device.exp_avg_sq())) << step;
    EXPECT_EQ(host.step_count(), device.step_count()) << step;
  }
  EXPECT_EQ(device.step_count(), 4);
  // A non-finite gradient: the norm says so, and the gradients are not scaled by it.
  device.grads().fill_(1.0);
  device.grads()[3] = NAN;
  EXPECT_TRUE(std::isnan(device.clip_grad_norm_on_device(1.0).item<double>()));
  EXPECT_EQ(device.grads()[0].item<float>(), 1.0f);
}

TEST(FlatAdamW, GradientsAccumulateIntoTheFlatBuffer) {
  auto m = model::load_hf_model(test::source_dir() + "/tests/fixtures/reference/mha_f32");
  FlatAdamW opt(*m, {});
  at::Tensor ids = at::arange(1, 11).view({1, 10});
  at::Tensor pos = at::arange(10).view({1, 10});
  m->forward(ids, pos).sum().backward();
  double first = opt.grads().abs().sum().item<double>();
  EXPECT_GT(first, 0);
  m->forward(ids, pos).sum().backward();
  EXPECT_NEAR(opt.grads().abs().sum().item<double>(), 2 * first, 1e-3 * first);
  opt.zero_grad();
  EXPECT_EQ(opt.grads().abs().sum().item<double>(), 0.0);
}

TEST(FlatAdamW, ClippingScalesToTheMaxNorm) {
  auto m = model::load_hf_model(test::source_dir() + "/tests/fixtures/reference/mha_f32");
  FlatAdamW opt(*m, {});
  opt.grads().fill_(1.0);
  double norm = opt.clip_grad_norm(1.0);
  EXPECT_NEAR(norm, std::sqrt(static_cast<double>(opt.numel())), 1e-3 * norm);
  EXPECT_NEAR(opt.grads().norm().item<double>(), 1.0, 1e-4);
}

TEST(Schedule, MatchesHuggingFaceWarmupCosineLinearAndConstant) {
  // get_cosine_schedule_with_warmup(warmup=10, total=100) at a few steps
  EXPECT_DOUBLE_EQ(lr_at(config::Schedule::kCosine, 1.0, 0.0, 10, 100, 0), 0.0);
  EXPECT_DOUBLE_EQ(lr_at(config::Schedule::kCosine, 1.0, 0.0, 10, 100, 5), 0.5);
  EXPECT_DOUBLE_EQ(lr_at(config::Schedule::kCosine, 1.0, 0.0, 10, 100, 10), 1.0);
  EXPECT_NEAR(lr_at(config::Schedule::kCosine, 1.0, 0.0, 10, 100, 55), 0.5, 1e-12);
  EXPECT_NEAR(lr_at(config::Schedule::kCosine, 1.0, 0.0, 10, 100, 100), 0.0, 1e-12);
  EXPECT_NEAR(lr_at(config::Schedule::kLinear, 2.0, 0.0, 10, 100, 55), 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(lr_at(config::Schedule::kConstant, 3.0, 0.0, 10, 100, 90), 3.0);
  EXPECT_NEAR(lr_at(config::Schedule::kCosine, 1.0, 0.1, 0, 100, 100), 0.1, 1e-12);
  EXPECT_EQ(warmup_steps(0.03, -1, 353), 11);  // HF: ceil(0.03 * 353)
  EXPECT_EQ(warmup_steps(0.03, 5, 353), 5);
}

}  // namespace
}  // namespace sft::train
