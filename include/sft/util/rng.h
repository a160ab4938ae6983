// A small deterministic random generator (xoshiro256**), identical on every platform and
// standard library, so that a seed fixes every permutation and shuffle in sft.
// (std::shuffle and std::uniform_int_distribution are implementation-defined.)
#pragma once

#include <cstdint>
#include <vector>

#include "sft/util/hash.h"

namespace sft {

class Rng {
 public:
  explicit Rng(std::uint64_t seed);
  std::uint64_t next();
  std::uint64_t below(std::uint64_t n);  // uniform in [0, n), unbiased; REQUIRES: n > 0
  double uniform();                      // [0, 1)

  template <typename T>
  void shuffle(std::vector<T>& v) {  // Fisher-Yates
    for (std::size_t i = v.size(); i > 1; --i) {
      std::size_t j = static_cast<std::size_t>(below(i));
      std::swap(v[i - 1], v[j]);
    }
  }

 private:
  std::uint64_t s_[4];
};

// 0..n-1 in a seeded random order.
std::vector<std::int64_t> permutation(std::int64_t n, std::uint64_t seed);

}  // namespace sft
