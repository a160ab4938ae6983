#include "sft/dist/launch.h"

#include <cstdlib>

#include "sft/util/error.h"

namespace sft::dist {
namespace {

const char* env(const char* k) {
  const char* v = std::getenv(k);
  return v && *v ? v : nullptr;
}

int env_int(const char* k, int def) {
  const char* v = env(k);
  if (!v) return def;
  try {
    return std::stoi(v);
  } catch (...) {
    throw ConfigError(std::string("environment variable ") + k + "=\"" + v + "\" is not an integer");
  }
}

}  // namespace

const char* launcher_name(Launcher l) {
  switch (l) {
    case Launcher::kEnv: return "env";
    case Launcher::kTorchrun: return "torchrun";
    case Launcher::kSlurm: return "slurm";
    case Launcher::kSingle: break;
  }
  return "single";
}

std::string first_host(const std::string& list) {
  std::string first;
  int depth = 0;
  for (char c : list) {
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (c == ',' && depth == 0) break;
    first.push_back(c);
  }
  auto open = first.find('[');
  if (open == std::string::npos) return first;
  std::string prefix = first.substr(0, open);
  std::string range = first.substr(open + 1, first.find(']') - open - 1);
  std::string head = range.substr(0, range.find_first_of(",-"));
  return prefix + head;
}

LaunchInfo detect_launch() {
  LaunchInfo l;
  if (env("RANK") && env("WORLD_SIZE")) {
    l.rank = env_int("RANK", 0);
    l.world = env_int("WORLD_SIZE", 1);
    l.local_rank = env_int("LOCAL_RANK", l.rank);
    l.local_world =
        env_int("LOCAL_WORLD_SIZE", 1);  // unknown: 1 (train/device_rule.h infers from LOCAL_RANK)
    if (const char* a = env("MASTER_ADDR")) l.master_addr = a;
    l.master_port = env_int("MASTER_PORT", 29500);
    const char* agent = env("TORCHELASTIC_USE_AGENT_STORE");
    l.agent_store = agent && std::string(agent) == "True";
    l.launcher = env("TORCHELASTIC_RUN_ID") || env("TORCHELASTIC_RESTART_COUNT") ? Launcher::kTorchrun
                                                                                 : Launcher::kEnv;
  } else if (env("SLURM_PROCID") && env("SLURM_NTASKS")) {
    l.rank = env_int("SLURM_PROCID", 0);
    l.world = env_int("SLURM_NTASKS", 1);
    l.local_rank = env_int("SLURM_LOCALID", 0);
    if (const char* per = env("SLURM_NTASKS_PER_NODE")) l.local_world = std::atoi(per);
    const char* nodes = env("SLURM_JOB_NODELIST") ? env("SLURM_JOB_NODELIST") : env("SLURM_NODELIST");
    if (const char* a = env("MASTER_ADDR"))
      l.master_addr = a;
    else if (nodes)
      l.master_addr = first_host(nodes);
    l.master_port = env_int("MASTER_PORT", 20000 + env_int("SLURM_JOB_ID", 9500) % 20000);
    l.launcher = Launcher::kSlurm;
  }
  if (l.world > 1 && (l.master_port < 1 || l.master_port > 65535))
    throw ConfigError("environment variable MASTER_PORT=" + std::to_string(l.master_port) +
                      " is not a TCP port (1-65535)");
  if (l.world < 1 || l.rank < 0 || l.rank >= l.world)
    throw ConfigError("launch environment: rank " + std::to_string(l.rank) + " is outside world size " +
                      std::to_string(l.world));
  return l;
}

}  // namespace sft::dist
