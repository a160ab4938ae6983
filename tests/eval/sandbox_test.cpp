// The HumanEval sandbox: hostile samples (network, writes outside the working directory,
// deletions, fork bombs, endless loops, memory, early exits) fail only themselves while
// correct samples pass in the same run; each blocked action is shown to work without the
// sandbox, so the test proves that the sandbox is what stops it.
#include "sft/eval/sandbox.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "sft/eval/evaluator.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft::eval {
namespace {

// A TCP server on 127.0.0.1 (an ephemeral port); connections succeed unless the sandbox
// takes the network away.
struct Listener {
  int fd = -1, port = 0;
  Listener() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 64) != 0) throw std::runtime_error("listen");
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~Listener() { ::close(fd); }
};

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (auto p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
}

std::int64_t processes_of_sandbox_uids(int workers) {
  std::int64_t n = 0;
  DIR* d = ::opendir("/proc");
  while (dirent* e = ::readdir(d)) {
    struct stat st;
    if (e->d_name[0] >= '0' && e->d_name[0] <= '9' && ::stat((std::string("/proc/") + e->d_name).c_str(), &st) == 0 &&
        st.st_uid >= kSandboxUidBase && st.st_uid < kSandboxUidBase + static_cast<unsigned>(workers))
      ++n;
  }
  ::closedir(d);
  return n;
}

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!sandbox_available(&why)) GTEST_SKIP() << "sandbox unavailable here: " << why;
    const std::string pid = std::to_string(::getpid());
    escape_ = "/tmp/sft_sandbox_escape_" + pid;
    home_escape_ = "/root/sft_sandbox_escape_home_" + pid;
    // A canary only the read-only mounts protect: world-writable folder and file.
    canary_dir_ = dir_.file("canary");
    fs::make_dirs(canary_dir_);
    ::chmod(dir_.path().c_str(), 0755);
    ::chmod(canary_dir_.c_str(), 0777);
    canary_ = canary_dir_ + "/canary.txt";
    test::write(canary_, "still here");
    ::chmod(canary_.c_str(), 0666);
    ::unlink(escape_.c_str());
    ::unlink(home_escape_.c_str());
  }
  void TearDown() override {
    ::unlink(escape_.c_str());
    ::unlink(home_escape_.c_str());
  }
  std::string fill(std::string s, int port) const {
    replace_all(s, "PORT", std::to_string(port));
    replace_all(s, "ESCAPE", escape_);
    replace_all(s, "CANARY", canary_);
    replace_all(s, "PID", std::to_string(::getpid()));
    return s;
  }
  static SandboxOptions opts() {
    SandboxOptions o;
    o.workers = 4;
    o.timeout_s = 3;
    return o;
  }
  test::TempDir dir_;
  std::string escape_, home_escape_, canary_dir_, canary_;
};

TEST_F(SandboxTest, HostileSamplesFailOnlyThemselvesWhileCorrectOnesPass) {
  Listener server;
  const std::string fixtures = test::source_dir() + "/tests/fixtures/eval";
  const std::string samples = fill(test::read(fixtures + "/samples.jsonl"), server.port);
  test::write(dir_.file("samples.jsonl"), samples);
  auto r = score_humaneval_samples(dir_.file("samples.jsonl"), fixtures + "/problems.jsonl", opts());

  std::istringstream in(samples);
  std::string line;
  std::size_t i = 0, hostile = 0;
  while (std::getline(in, line)) {
    auto want = nlohmann::json::parse(line);
    const auto& got = r["samples"][i++];
    EXPECT_EQ(got["passed"].get<bool>(), want["expect_pass"].get<bool>())
        << want["name"].get<std::string>() << ": " << got["result"].get<std::string>();
    hostile += !want["expect_pass"].get<bool>();
    const std::string name = want["name"];
    if (name == "infinite_loop" || name == "sleep_forever") EXPECT_EQ(got["result"], "timed out") << name;
    if (name == "socket_loopback") EXPECT_NE(got["result"].get<std::string>().find("unreachable"), std::string::npos) << got["result"];
    if (name == "exit_early") EXPECT_EQ(got["result"], "failed: the program exited before the tests finished");
  }
  EXPECT_EQ(i, r["samples"].size());
  EXPECT_GE(hostile, 15u);
  EXPECT_FALSE(fs::exists(escape_));
  EXPECT_FALSE(fs::exists(home_escape_));
  EXPECT_EQ(test::read(canary_), "still here");
  EXPECT_EQ(processes_of_sandbox_uids(4), 0);  // the fork bomb and the sleepers are gone
  EXPECT_TRUE(r["summary"]["sandbox"].get<bool>());
}

TEST_F(SandboxTest, WhatItBlocksWorksWithoutIt) {
  Listener server;
  const std::string prog = fill(
      "import os, socket\n"
      "socket.create_connection(('127.0.0.1', PORT), timeout=2).close()\n"
      "open('ESCAPE', 'w').write('x')\n"
      "os.remove('CANARY')\n",
      server.port);
  SandboxOptions o = opts();
  auto boxed = run_programs({prog}, o);
  EXPECT_FALSE(boxed[0].passed);
  EXPECT_NE(boxed[0].stderr_tail.find("Network is unreachable"), std::string::npos) << boxed[0].stderr_tail;
  // The same program without the sandbox connects, writes and deletes.
  o.unsafe_no_sandbox = true;
  auto open = run_programs({prog}, o);
  EXPECT_TRUE(open[0].passed) << open[0].result << "\n" << open[0].stderr_tail;
  EXPECT_TRUE(fs::exists(escape_));
  EXPECT_FALSE(fs::exists(canary_));
}

TEST_F(SandboxTest, ProgramsRunUnprivilegedInAPrivateWritableDirectory) {
  const std::string prog =
      "import os, socket, tempfile\n"
      "assert os.getuid() != 0 and os.geteuid() != 0, os.getuid()\n"
      "assert os.getpid() == 1, os.getpid()  # PID 1 of its own namespace\n"
      "assert sorted(int(p) for p in os.listdir('/proc') if p.isdigit()) == [1]\n"
      "open('here.txt', 'w').write('ok')\n"
      "assert os.environ['HOME'] == os.getcwd() == tempfile.gettempdir()\n"
      "with tempfile.NamedTemporaryFile() as f:\n"
      "    f.write(b'x')\n"
      "for path in ['/tmp/x', '/usr/x', '/dev/shm/x', '/var/tmp/x']:\n"
      "    try:\n"
      "        open(path, 'w')\n"
      "        raise SystemExit('wrote ' + path)\n"
      "    except OSError:\n"
      "        pass\n"
      "s = socket.socket()\n"
      "try:\n"
      "    s.connect(('127.0.0.1', 22))\n"
      "    raise SystemExit('connected')\n"
      "except OSError:\n"
      "    pass\n"
      "print(os.getcwd())\n";
  auto r = run_programs({prog, prog}, opts());
  for (const auto& x : r) EXPECT_TRUE(x.passed) << x.result << "\n" << x.stderr_tail;
}

TEST_F(SandboxTest, AnEarlyExitWithStatusZeroDoesNotPass) {
  auto r = run_programs({"import sys\nsys.exit(0)\nprint('DONE')\n", "print('DONE')\n"}, opts(), "DONE");
  EXPECT_FALSE(r[0].passed);
  EXPECT_TRUE(r[1].passed) << r[1].result;
}

}  // namespace
}  // namespace sft::eval
