// The fused layer kernels (sft/model/fused.h) against the ATen chains they replace, HF's op
// by op form: forward values and every gradient, in fp32 and bf16, on shapes that are not
// multiples of the vector width.
#include "sft/model/fused.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include <limits>

namespace sft::model {
namespace {

at::Generator gen(std::uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

at::Tensor leaf(at::IntArrayRef shape, at::ScalarType t, std::uint64_t seed, double scale = 1.0) {
  return (at::randn(shape, gen(seed), at::TensorOptions().dtype(at::kFloat)) * scale)
      .to(t)
      .requires_grad_(true);
}

// The outputs and the gradients of `inputs` for sum(out_i * r_i), r_i fixed random.
std::vector<at::Tensor> run(const std::vector<at::Tensor>& outs, const std::vector<at::Tensor>& inputs) {
  at::Tensor loss = at::zeros({}, at::kFloat);
  for (std::size_t i = 0; i < outs.size(); ++i) {
    at::Tensor r = at::randn(outs[i].sizes(), gen(100 + i), at::TensorOptions().dtype(at::kFloat));
    loss = loss + (outs[i].to(at::kFloat) * r).sum();
  }
  std::vector<at::Tensor> result;
  for (const auto& o : outs) result.push_back(o.detach().to(at::kFloat));
  for (const auto& g : torch::autograd::grad({loss}, inputs)) result.push_back(g.to(at::kFloat));
  return result;
}

// Within `ulps` units in the last place of the dtype, relative to each tensor's largest value.
void expect_close(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, at::ScalarType t,
                  double ulps) {
  ASSERT_EQ(a.size(), b.size());
  const double eps = t == at::kBFloat16 ? 1.0 / 128 : 1.0 / (1 << 23);
  for (std::size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].sizes(), b[i].sizes()) << i;
    const double scale = std::max(1e-30, b[i].abs().max().item<double>());
    const double worst = (a[i] - b[i]).abs().max().item<double>() / scale;
    EXPECT_LE(worst, ulps * eps) << "output " << i << " (0: forward, then the gradients)";
  }
}

class Dtypes : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(Dtypes, RmsNormMatchesHfsChainForwardAndBackward) {
  const at::ScalarType t = GetParam();
  for (std::int64_t d : {20, 128, 333}) {
    for (at::ScalarType out : {at::kFloat, at::kBFloat16}) {
      at::Tensor x = leaf({3, 7, d}, t, 1, 3.0), w = leaf({d}, t, 2);
      auto fused = run({fused_rms_norm(x, w, 1e-5, out)}, {x, w});
      auto chain = run({reference_rms_norm(x, w, 1e-5, out)}, {x, w});
      // Forward: the sum of squares in another order moves rstd by an ulp of fp32 before
      // the roundings both take. Gradients: bf16 rounds the chain's intermediates.
      expect_close(fused, chain, t == at::kBFloat16 || out == at::kBFloat16 ? at::kBFloat16 : at::kFloat, 4);
    }
  }
}

TEST_P(Dtypes, SwigluMatchesSiluTimesUpForwardAndBackward) {
  const at::ScalarType t = GetParam();
  for (std::int64_t f : {13, 352}) {
    at::Tensor gu = leaf({2, 5, 2 * f}, t, 3, 4.0);
    {
      at::NoGradGuard ng;  // the tails of the sigmoid, where exp saturates
      gu.select(2, 0).fill_(-100.0);
      gu.select(2, 1).fill_(100.0);
      gu.select(2, 2).fill_(0.0);
    }
    auto fused = run({fused_swiglu(gu)}, {gu});
    auto chain = run({reference_swiglu(gu)}, {gu});
    expect_close(fused, chain, t, 2);
  }
}

TEST_P(Dtypes, QkvRotaryIsBitExactWithHfsRotateHalfChain) {
  const at::ScalarType t = GetParam();
  const std::int64_t B = 2, T = 5, H = 4, K = 2, Dh = 6;
  for (bool per_batch : {false, true}) {
    for (double scale : {1.0, 1.0 / std::sqrt(6.0)}) {
      at::Tensor qkv = leaf({B, T, (H + 2 * K) * Dh}, t, 4);
      at::Tensor angles =
          at::rand({per_batch ? B : 1, 1, T, Dh}, gen(5), at::TensorOptions().dtype(at::kFloat)) * 7;
      at::Tensor cos = angles.cos(), sin = angles.sin();
      auto f = fused_qkv_rotary(qkv, cos, sin, H, K, scale);
      auto c = reference_qkv_rotary(qkv, cos, sin, H, K, scale);
      for (int i = 0; i < 3; ++i) EXPECT_EQ(f[i].sizes(), c[i].sizes()) << i;
      auto fused = run({f[0], f[1], f[2]}, {qkv});
      auto chain = run({c[0], c[1], c[2]}, {qkv});
      for (std::size_t i = 0; i < fused.size(); ++i)
        EXPECT_TRUE(at::equal(fused[i], chain[i]))
            << "output " << i << " per_batch " << per_batch << " scale " << scale;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(FusedKernels, Dtypes, ::testing::Values(at::kFloat, at::kBFloat16),
                         [](const auto& info) {
                           return std::string(info.param == at::kFloat ? "fp32" : "bf16");
                         });

TEST(FusedKernels, RmsNormWeightGradientIsTheSameAtAnyThreadCount) {
  at::Tensor x = leaf({4, 100, 64}, at::kFloat, 6), w = leaf({64}, at::kFloat, 7);
  const int threads = at::get_num_threads();
  std::vector<at::Tensor> grads;
  for (int n : {1, 2, 3}) {
    at::set_num_threads(n);
    grads.push_back(run({fused_rms_norm(x, w, 1e-6, at::kFloat)}, {x, w})[2]);
  }
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(grads[0], grads[1]));
  EXPECT_TRUE(at::equal(grads[0], grads[2]));
}

TEST(FusedKernels, NanAndInfinityPropagateAsInTheChain) {
  at::Tensor gu = at::zeros({1, 8}, at::kFloat);
  gu[0][0] = std::numeric_limits<float>::quiet_NaN();
  gu[0][1] = std::numeric_limits<float>::infinity();
  gu[0][4] = 1.0;
  gu[0][5] = std::numeric_limits<float>::quiet_NaN();
  at::Tensor y = fused_swiglu(gu);
  EXPECT_TRUE(std::isnan(y[0][0].item<float>()));
  EXPECT_TRUE(std::isnan(y[0][1].item<float>()));  // silu(inf) * 0, as the chain gives
  EXPECT_TRUE(std::isnan(y[0][1].item<float>()) == std::isnan(reference_swiglu(gu)[0][1].item<float>()));
  at::Tensor x = at::ones({2, 4}, at::kBFloat16);
  x[1][2] = std::numeric_limits<float>::quiet_NaN();
  at::Tensor n = fused_rms_norm(x, at::ones({4}, at::kBFloat16), 1e-6, at::kBFloat16);
  EXPECT_FALSE(at::isnan(n[0]).any().item<bool>());
  EXPECT_TRUE(at::isnan(n[1]).all().item<bool>());
}

}  // namespace
}  // namespace sft::model
