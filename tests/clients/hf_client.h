// The transformers client (tests/clients/hf_transformers.py) and `sft score` as the client
// tests call them, and how their log-probs are compared: shared by transformers_test.cpp
// (LLaMA) and qwen_transformers_test.cpp.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_util.h"

namespace sft::test::hf_client {

using json = nlohmann::json;

// Both sides compute in fp32 from the same stored values (bf16 weights are widened exactly
// to fp32 on both sides); they differ only in the order of floating-point operations.
inline constexpr double kTolerance = 1e-4;

// Runs argv (cwd: the repository root); its stdout's JSON, or null after recording why.
inline json run_json(const std::vector<std::string>& argv, int timeout_s = 300) {
  auto r = ::sft::test::run_program(argv, {{"OMP_NUM_THREADS", "1"}}, timeout_s);
  if (r.exit_code != 0) {
    ADD_FAILURE() << argv[0] << " " << argv[1] << " exited " << r.exit_code << ":\n" << r.err;
    return nullptr;
  }
  try {
    return json::parse(r.out);
  } catch (const json::parse_error& e) {
    ADD_FAILURE() << argv[0] << " " << argv[1] << " printed no JSON (" << e.what() << "):\n" << r.out;
    return nullptr;
  }
}

// The transformers client.
inline json hf(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {::sft::test::python(),
                                   ::sft::test::source_dir() + "/tests/clients/hf_transformers.py"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_json(argv);
}

// `sft score` on the CPU in fp32 (its default precision).
inline json sft_score(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {::sft::test::sft_binary(), "score", "--device", "cpu", "--threads", "1"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_json(argv);
}

inline std::string csv(const json& ids) {
  std::string s;
  for (const auto& i : ids) s += (s.empty() ? "" : ",") + std::to_string(i.get<long long>());
  return s;
}

// 64 ids below 512 (the vocabulary of the client's models), BOS first; fixed pseudo-random.
inline std::string sequence() {
  std::string s = "1";
  unsigned x = 12345;
  for (int i = 1; i < 64; ++i) {
    x = x * 1103515245u + 12345u;
    s += "," + std::to_string(3 + (x >> 8) % 509);
  }
  return s;
}

// Largest |a - b| over the scored positions (position 0 has no prediction); infinite when
// the shapes differ or a value is not finite.
inline double max_diff(const json& a, const json& b) {
  const json& x = a.at("logprobs");
  const json& y = b.at("logprobs");
  if (x.size() != y.size() || x.size() < 2 || !x[0].is_null() || !y[0].is_null())
    return std::numeric_limits<double>::infinity();
  double worst = 0;
  for (std::size_t i = 1; i < x.size(); ++i) {
    if (!x[i].is_number() || !y[i].is_number()) return std::numeric_limits<double>::infinity();
    double d = std::fabs(x[i].get<double>() - y[i].get<double>());
    if (!std::isfinite(d)) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, d);
  }
  return worst;
}

// Max - min of the log-probs: far above kTolerance, so the weights drive the comparison.
inline double spread(const json& a) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  const json& x = a.at("logprobs");
  for (std::size_t i = 1; i < x.size(); ++i) {
    double v = x[i].get<double>();
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  return hi - lo;
}

// transformers found every tensor it expected and used every tensor stored.
inline void expect_clean_load(const json& theirs, const std::string& cls = "LlamaForCausalLM") {
  EXPECT_EQ(theirs.at("class"), cls);
  EXPECT_EQ(theirs.at("param_dtype"), "float32");
  for (const char* k : {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"})
    EXPECT_TRUE(theirs.at(k).empty()) << k << ": " << theirs.at(k).dump();
}

}  // namespace sft::test::hf_client
