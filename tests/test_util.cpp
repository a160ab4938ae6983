#include "test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "sft/model/hf_checkpoint.h"
#include "sft/model/llama.h"
#include "sft/model/safetensors.h"
#include "sft/util/fs.h"
#include "sft/util/malloc_tuning.h"

namespace sft::test {

// The test binary trains in-process: give it the same allocator settings as `sft`.
static const bool kMallocTuned = (tune_malloc(), true);

std::string source_dir() { return SFT_SOURCE_DIR; }
std::string python() { return SFT_PYTHON; }
std::string venv_program(const std::string& name) {
  std::string py = python();
  auto slash = py.rfind('/');
  return slash == std::string::npos ? name : py.substr(0, slash + 1) + name;
}
std::string sft_binary() { return SFT_BINARY; }
std::string tiny(const std::string& file) { return source_dir() + "/data/tiny/" + file; }

std::string shared_data() {
  if (const char* env = std::getenv("SFT_SHARED_DATA"); env && fs::is_dir(env)) return env;
  std::string p = source_dir() + "/../shared/data";
  return fs::is_dir(p) ? p : "";
}

TempDir::TempDir() {
  std::string tmpl =
      (std::getenv("TMPDIR") ? std::string(std::getenv("TMPDIR")) : std::string("/tmp")) + "/sft_test.XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  char* p = ::mkdtemp(buf.data());
  if (!p) throw std::runtime_error("mkdtemp failed");
  path_ = p;
}

TempDir::~TempDir() {
  if (!std::getenv("SFT_KEEP_TEST_DIRS")) fs::remove_all(path_);
}

RunResult run_program(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                      int timeout_s, const std::string& cwd) {
  TempDir io;
  std::string out_path = io.file("stdout"), err_path = io.file("stderr");
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    int o = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(o, 1);
    ::dup2(e, 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    if (::chdir((cwd.empty() ? source_dir() : cwd).c_str()) != 0) ::_exit(127);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  RunResult r;
  int status = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      r.exit_code = 124;
      r.out = read(out_path);
      r.err = read(err_path);
      return r;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read(out_path);
  r.err = read(err_path);
  return r;
}

RunResult run_sft(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
                  int timeout_s, const std::string& cwd) {
  std::vector<std::string> argv = {sft_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv, env, timeout_s, cwd);
}

std::vector<std::string> train_args(const std::string& out, const std::string& cache,
                                    const std::vector<std::string>& sets) {
  std::vector<std::string> a = {"train", "--config", "configs/tiny/dmt.yaml",  "--output-dir",
                                out,     "--set",    "data.cache_dir=" + cache};
  for (const auto& s : sets) a.insert(a.end(), {"--set", s});
  return a;
}

std::vector<std::string> tiny_train_args(const std::string& out, const std::string& cache,
                                         const std::vector<std::string>& sets) {
  std::vector<std::string> all = {"datasets.math.fraction=1/16", "datasets.code.fraction=1/16",
                                  "datasets.general.fraction=1/8"};
  all.insert(all.end(), sets.begin(), sets.end());
  return train_args(out, cache, all);
}

Process spawn_sft(const std::vector<std::string>& args, const std::map<std::string, std::string>& env) {
  Process p;
  p.io = std::make_shared<TempDir>();
  p.out_path = p.io->file("stdout");
  p.err_path = p.io->file("stderr");
  pid_t pid = ::fork();
  if (pid == 0) {
    int o = ::open(p.out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = ::open(p.err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(o, 1);
    ::dup2(e, 2);
    if (::chdir(source_dir().c_str()) != 0) ::_exit(127);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<std::string> argv = {sft_binary()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> a;
    for (auto& x : argv) a.push_back(const_cast<char*>(x.c_str()));
    a.push_back(nullptr);
    ::execv(a[0], a.data());
    ::_exit(127);
  }
  p.pid = pid;
  return p;
}

bool process_running(const Process& p) {
  int status = 0;
  return ::waitpid(p.pid, &status, WNOHANG) == 0;
}

int wait_process(Process& p, int timeout_s) {
  int status = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {
    pid_t w = ::waitpid(p.pid, &status, WNOHANG);
    if (w == p.pid) break;
    if (w < 0) return -1;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(p.pid, SIGKILL);
      ::waitpid(p.pid, &status, 0);
      return 124;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

std::map<std::string, std::string> rank_env(int rank, int world, int port) {
  return {{"RANK", std::to_string(rank)},
          {"WORLD_SIZE", std::to_string(world)},
          {"LOCAL_RANK", std::to_string(rank)},
          {"MASTER_ADDR", "127.0.0.1"},
          {"MASTER_PORT", std::to_string(port)}};
}

double max_weight_diff(const std::string& model_a, const std::string& model_b) {
  auto fa = model::SafetensorsFile::open(model_a + "/model.safetensors");
  auto fb = model::SafetensorsFile::open(model_b + "/model.safetensors");
  double worst = 0;
  for (const auto& t : fa->header().tensors)
    worst = std::max(worst, (fa->tensor(t.name) - fb->tensor(t.name)).abs().max().item<double>());
  return worst;
}

std::unique_ptr<model::Llama> tiny_llama(std::uint64_t seed) {
  auto cfg = model::LlamaConfig::from_json({{"hidden_size", 64},
                                            {"intermediate_size", 128},
                                            {"num_hidden_layers", 2},
                                            {"num_attention_heads", 4},
                                            {"num_key_value_heads", 2},
                                            {"vocab_size", 1024},
                                            {"max_position_embeddings", 512}},
                                           "tiny");
  auto m = std::make_unique<model::Llama>(cfg);
  m->init_weights(seed);
  return m;
}

std::string save_tiny_llama(std::uint64_t seed, const std::string& dir) {
  model::SaveOptions so;
  so.tokenizer_model = tiny("tokenizer.model");
  model::save_hf_model(*tiny_llama(seed), dir, so);
  return dir;
}

std::string read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

void write(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

}  // namespace sft::test
