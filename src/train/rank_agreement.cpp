#include "sft/train/rank_agreement.h"

#include <torch/version.h>

#include "sft/util/error.h"

namespace sft::train {

Settings flatten(const nlohmann::json& j, const std::string& prefix) {
  Settings out;
  if (j.is_object() && !j.empty()) {
    for (auto it = j.begin(); it != j.end(); ++it)
      for (auto& kv : flatten(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key()))
        out.insert(kv);
  } else if (j.is_array() && !j.empty()) {
    for (std::size_t i = 0; i < j.size(); ++i)
      for (auto& kv : flatten(j[i], prefix + "[" + std::to_string(i) + "]")) out.insert(kv);
  } else {
    out[prefix] = j.is_string() ? j.get<std::string>() : j.dump();
  }
  return out;
}

Settings run_identity(const config::RunConfig& cfg) {
  Settings s = flatten(cfg.to_json());
  s.erase("config_file");    // the same config may sit at another path on another node
  s.erase("train.threads");  // cores per node may differ; the numbers do not depend on it
  s["version.sft"] = SFT_VERSION;
  s["version.libtorch"] = TORCH_VERSION;
  return s;
}

std::string describe_differences(const Settings& reference, const Settings& theirs, int rank) {
  std::string out;
  int shown = 0, more = 0;
  auto note = [&](const std::string& key, const std::string* a, const std::string* b) {
    if (shown == 10) {
      ++more;
      return;
    }
    ++shown;
    out += (out.empty() ? "" : "; ") + key + ": rank 0 has " + (a ? *a : std::string("(unset)")) + ", rank " +
           std::to_string(rank) + " has " + (b ? *b : std::string("(unset)"));
  };
  for (const auto& [k, v] : reference) {
    auto it = theirs.find(k);
    if (it == theirs.end())
      note(k, &v, nullptr);
    else if (it->second != v)
      note(k, &v, &it->second);
  }
  for (const auto& [k, v] : theirs)
    if (!reference.count(k)) note(k, nullptr, &v);
  if (more) out += "; and " + std::to_string(more) + " more";
  return out;
}

void require_agreement(dist::Context& ctx, const Settings& mine, const std::string& what) {
  if (!ctx.distributed()) return;
  const std::vector<std::string> all = ctx.all_gather_strings(nlohmann::json(mine).dump());
  const Settings reference = nlohmann::json::parse(all[0]).get<Settings>();
  std::string problems;
  for (std::size_t r = 1; r < all.size(); ++r) {
    const std::string d =
        describe_differences(reference, nlohmann::json::parse(all[r]).get<Settings>(), static_cast<int>(r));
    if (!d.empty()) problems += (problems.empty() ? "" : "; ") + d;
  }
  if (!problems.empty())
    throw ConfigError("rank " + std::to_string(ctx.rank()) + " of " + std::to_string(ctx.world()) +
                      ": the ranks disagree on " + what + ": " + problems +
                      "; start every rank with the same config, --set overrides, data and sft build");
}

}  // namespace sft::train
