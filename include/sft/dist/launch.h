// Where this process sits in a distributed launch, read from the environment that the
// launchers set:
//   torchrun (or plain env vars)  RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
//                                 MASTER_ADDR, MASTER_PORT, TORCHELASTIC_USE_AGENT_STORE
//   Slurm (srun)                  SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
//                                 SLURM_NTASKS_PER_NODE, first host of SLURM_JOB_NODELIST;
//                                 MASTER_PORT if set, else 20000 + SLURM_JOB_ID % 20000
// RANK/WORLD_SIZE win over Slurm's variables (torchrun inside srun).
#pragma once

#include <string>

namespace sft::dist {

// Who started the process: set from the environment, not chosen; named in messages.
enum class Launcher { kSingle, kEnv, kTorchrun, kSlurm };
const char* launcher_name(Launcher l);  // "single" | "env" | "torchrun" | "slurm"

struct LaunchInfo {
  int rank = 0, world = 1, local_rank = 0, local_world = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool agent_store = false;  // torchrun >= 2 hosts the TCPStore in its agent
  Launcher launcher = Launcher::kSingle;
};

LaunchInfo detect_launch();

// First host of a Slurm node list: "node[01-04,07],gpu5" -> "node01".
std::string first_host(const std::string& nodelist);

}  // namespace sft::dist
