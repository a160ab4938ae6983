// Ranks that run the same thing.
//
// A launch line with a typo on one node (another train.lr, another data fraction, another
// model shape, another sft build) must not train: rank 0 would export its own replica and
// write a manifest that does not describe what the others trained. At rendezvous every
// rank shares what it is about to run, as flat "key: value" settings, and compares them
// with rank 0's; any difference fails every rank at once (ConfigError, exit code 2)
// naming the keys and both values.
#pragma once

#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "sft/config/run_config.h"
#include "sft/dist/context.h"

namespace sft::train {

using Settings = std::map<std::string, std::string>;

// {"a": {"b": [1, 2]}} -> {"a.b[0]": "1", "a.b[1]": "2"}.
Settings flatten(const nlohmann::json& j, const std::string& prefix = "");

// The resolved config and the versions of sft and LibTorch, minus what may differ per node
// (train.threads, the config file's own path).
Settings run_identity(const config::RunConfig& cfg);

// Collective. Throws ConfigError on every rank when some rank's settings differ from rank
// 0's; `what` says what was compared ("the run configuration").
void require_agreement(dist::Context& ctx, const Settings& mine, const std::string& what);

// The part of the check that needs no group: "" when `theirs` (rank `rank`'s) equals
// `reference` (rank 0's), else "key: rank 0 has A, rank N has B; ..." (first ten keys).
std::string describe_differences(const Settings& reference, const Settings& theirs, int rank);

}  // namespace sft::train
