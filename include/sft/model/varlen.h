// How packed rows are attended per sample: samples (longest first) are put into groups of
// up to 32 no shorter than 80% of the group's longest, and each group runs as one padded
// causal attention of its longest length. Shared by the model and the memory planner, whose
// attention-score term is the sum over groups of count x width^2.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace sft::model {

struct VarlenGroup {
  std::size_t first = 0, count = 0;  // a range of the sorted lengths
  std::int64_t width = 0;            // the group's longest length
};

// `lengths` sorted longest first.
inline std::vector<VarlenGroup> varlen_groups(const std::vector<std::int64_t>& lengths) {
  std::vector<VarlenGroup> groups;
  for (std::size_t g0 = 0; g0 < lengths.size();) {
    const std::int64_t lmax = lengths[g0];
    std::size_t g1 = g0;
    while (g1 < lengths.size() && g1 - g0 < 32 && lengths[g1] * 5 >= lmax * 4) ++g1;
    groups.push_back({g0, g1 - g0, lmax});
    g0 = g1;
  }
  return groups;
}

// Attention scores per head for one packed micro-batch: sum of count x width^2.
inline double varlen_score_elements(std::vector<std::int64_t> lengths) {
  std::sort(lengths.begin(), lengths.end(), [](std::int64_t a, std::int64_t b) { return a > b; });
  double total = 0;
  for (const auto& g : varlen_groups(lengths))
    total += static_cast<double>(g.count) * static_cast<double>(g.width) * static_cast<double>(g.width);
  return total;
}

}  // namespace sft::model
