// The HumanEval sandbox: hostile samples (network, host Unix sockets, writes outside the
// working directory, deletions, fork bombs, endless loops, memory, early exits, forged
// passes) fail only themselves while correct samples pass in the same run; each blocked
// action is shown to work without the sandbox, so the test proves that the sandbox is what
// stops it; and a killed evaluator leaves no program and no folder behind.
#include "sft/eval/sandbox.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <thread>

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
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 64) != 0)
      throw std::runtime_error("listen");
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~Listener() { ::close(fd); }
};

// A world-writable Unix-domain stream socket listening at `path` (a path on the host, or
// an abstract address when it starts with '@'), as a host service would.
struct UnixListener {
  int fd = -1;
  std::string path;
  explicit UnixListener(std::string p) : path(std::move(p)) {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.data(), path.size());
    if (path[0] == '@')
      a.sun_path[0] = '\0';
    else
      ::unlink(path.c_str());
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd, 64) != 0)
      throw std::runtime_error("listen " + path);
    if (path[0] != '@') ::chmod(path.c_str(), 0777);
  }
  ~UnixListener() {
    ::close(fd);
    if (path[0] != '@') ::unlink(path.c_str());
  }
};

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (auto p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
    s.replace(p, from.size(), to);
}

std::int64_t processes_of_sandbox_uids(int workers) {
  std::int64_t n = 0;
  DIR* d = ::opendir("/proc");
  while (dirent* e = ::readdir(d)) {
    struct stat st;
    if (e->d_name[0] >= '0' && e->d_name[0] <= '9' &&
        ::stat((std::string("/proc/") + e->d_name).c_str(), &st) == 0 && st.st_uid >= kSandboxUidBase &&
        st.st_uid < kSandboxUidBase + static_cast<unsigned>(workers))
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
    replace_all(s, "UNIXSOCK", unix_socket_);
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
  std::string unix_socket_ = "/tmp/sft_sandbox_test_" + std::to_string(::getpid()) + ".sock";
};

TEST_F(SandboxTest, HostileSamplesFailOnlyThemselvesWhileCorrectOnesPass) {
  Listener server;
  UnixListener host_service(unix_socket_);
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
    const std::string result = got["result"];
    if (name == "socket_loopback" || name == "socket_unix_host" || name == "dgram_pair_to_host")
      EXPECT_NE(result.find("PermissionError"), std::string::npos) << name << ": " << result;
    if (name == "exit_early" || name == "os_exit_early")
      EXPECT_EQ(result, "failed: the program exited before the tests finished") << name;
    if (name.rfind("forge_", 0) == 0) EXPECT_EQ(result.rfind("failed: ", 0), 0u) << name << ": " << result;
  }
  EXPECT_EQ(i, r["samples"].size());
  EXPECT_GE(hostile, 22u);
  EXPECT_FALSE(fs::exists(escape_));
  EXPECT_FALSE(fs::exists(home_escape_));
  EXPECT_EQ(test::read(canary_), "still here");
  // The fork bomb and the sleepers are gone. Killed workers are reaped asynchronously, and a
  // test running beside this one (ctest -j2: any code evaluation) may hold the same uids for a
  // moment, so wait up to 10 s for none; a survivor of this test stays and fails it.
  std::int64_t left = 0;
  for (int i = 0; i < 100 && (left = processes_of_sandbox_uids(4)) != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(left, 0);
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
  EXPECT_NE(boxed[0].stderr_tail.find("PermissionError"), std::string::npos) << boxed[0].stderr_tail;
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
      "assert os.environ['HOME'] == os.getcwd() == tempfile.gettempdir() == '/tmp'\n"
      "assert sorted(os.listdir('/tmp')) == ['here.txt', 'prog.py'], os.listdir('/tmp')\n"
      "assert os.listdir('/run') == [] and os.listdir('/dev/shm') == []\n"
      "with tempfile.NamedTemporaryFile() as f:\n"
      "    f.write(b'x')\n"
      "for path in ['/usr/x', '/dev/shm/x', '/run/x', '/var/tmp/x']:\n"
      "    try:\n"
      "        open(path, 'w')\n"
      "        raise SystemExit('wrote ' + path)\n"
      "    except OSError:\n"
      "        pass\n"
      "try:\n"
      "    socket.socket()\n"
      "    raise SystemExit('made a socket')\n"
      "except PermissionError:\n"
      "    pass\n"
      "a, b = socket.socketpair()  # stream pairs still work: asyncio and multiprocessing use them\n"
      "a.sendall(b'x')\n"
      "assert b.recv(1) == b'x'\n"
      "import asyncio\n"
      "assert asyncio.run(asyncio.sleep(0, result=7)) == 7\n"
      "print(os.getcwd())\n";
  auto r = run_programs({prog, prog}, opts());
  for (const auto& x : r) EXPECT_TRUE(x.passed) << x.result << "\n" << x.stderr_tail;
}

TEST_F(SandboxTest, UnderTheHarnessOnlyAProgramThatRanToItsEndPasses) {
  auto r = run_programs(
      {"import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "print('DONE')\n", "raise SystemExit(0)\n",
       "import os\nos.write(4, b'0' * 32)\n", "import os\nos.read(3, 64)\n"},
      opts(), PassRule::harness);
  EXPECT_FALSE(r[0].passed) << r[0].result;
  EXPECT_FALSE(r[1].passed) << r[1].result;
  EXPECT_TRUE(r[2].passed) << r[2].result << "\n" << r[2].stderr_tail;
  EXPECT_FALSE(r[3].passed) << r[3].result;
  EXPECT_EQ(r[4].result, "failed: the completion report does not carry the harness's secret (forged)");
  EXPECT_NE(r[5].result.find("Bad file descriptor"), std::string::npos)
      << r[5].result;  // read before it starts
}

// The harness's frame, where the secret is, is out of reach (sandbox_hostile_test.cpp tries
// the other ways in).
TEST_F(SandboxTest, ASampleThatSearchesTheInterpretersFramesCannotForge) {
  auto r = run_programs({"import os, sys\nos.write(4, sys._getframe(1).f_locals['secret'])\nos._exit(0)\n"},
                        opts(), PassRule::harness);
  EXPECT_FALSE(r[0].passed);
  EXPECT_NE(r[0].result.find("the HumanEval harness refuses sys._getframe"), std::string::npos)
      << r[0].result;
}

TEST_F(SandboxTest, HostUnixSocketsAreUnreachableAnywhere) {
  // Three host services: a socket under /tmp, one under a folder the test owns outside
  // /tmp, /run and /dev/shm (where no mount trick reaches it), and an abstract one.
  const std::string outside = "/var/tmp/sft_sandbox_sock_" + std::to_string(::getpid());
  fs::make_dirs(outside);
  ::chmod(outside.c_str(), 0777);
  struct Remove {
    std::string dir;
    ~Remove() { fs::remove_all(dir); }
  } remove{outside};
  UnixListener in_tmp(unix_socket_), elsewhere(outside + "/s.sock"),
      abstract("@sft_sandbox_test_" + std::to_string(::getpid()));
  const std::string prog =
      "import socket\n"
      "for addr in ['" +
      in_tmp.path + "', '" + elsewhere.path + "', '\\0" + abstract.path.substr(1) +
      "']:\n"
      "    try:\n"
      "        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
      "    except PermissionError:\n"
      "        continue\n"
      "    s.connect(addr)\n"
      "    raise SystemExit('connected to ' + repr(addr))\n"
      "print('blocked')\n";
  SandboxOptions o = opts();
  auto boxed = run_programs({prog}, o);
  EXPECT_TRUE(boxed[0].passed) << boxed[0].result << "\n" << boxed[0].stderr_tail;
  // Without the sandbox the same program reaches the first service.
  o.unsafe_no_sandbox = true;
  auto open = run_programs({prog}, o);
  EXPECT_FALSE(open[0].passed);
  EXPECT_NE(open[0].result.find("connected to '" + in_tmp.path + "'"), std::string::npos) << open[0].result;
}

// Descendants of `pid` (by /proc/N/stat's parent pid), the process itself left out.
std::set<int> descendants(int pid) {
  std::map<int, int> parent;
  DIR* d = ::opendir("/proc");
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream f(std::string("/proc/") + e->d_name + "/stat");
    std::string stat;
    std::getline(f, stat);
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state;
    int ppid = 0;
    rest >> state >> ppid;
    parent[std::atoi(e->d_name)] = ppid;
  }
  ::closedir(d);
  std::set<int> out;
  for (bool grew = true; grew;) {
    grew = false;
    for (auto [p, pp] : parent)
      if ((pp == pid || out.count(pp)) && out.insert(p).second) grew = true;
  }
  return out;
}

bool alive(int pid) { return ::kill(pid, 0) == 0; }

void expect_nothing_left_after_killing_the_evaluator(int signal, bool unsafe) {
  test::TempDir dir, tmp;
  test::write(
      dir.file("samples.jsonl"),
      std::string(
          R"({"task_id": "t/return1", "completion": "    import time\n    time.sleep(120)\n    return 1\n"})") +
          "\n" +
          R"({"task_id": "t/add", "completion": "    import time\n    time.sleep(120)\n    return 1\n"})" +
          "\n");
  std::vector<std::string> args = {"eval",
                                   "--benchmark",
                                   "humaneval",
                                   "--samples",
                                   dir.file("samples.jsonl"),
                                   "--data",
                                   test::source_dir() + "/tests/fixtures/eval/problems.jsonl",
                                   "--timeout",
                                   "100",
                                   "--workers",
                                   "2"};
  if (unsafe) args.push_back("--unsafe-no-sandbox");
  auto p = test::spawn_sft(args, {{"TMPDIR", tmp.path()}});
  // Wait until both programs run: two python processes below the evaluator.
  std::set<int> running;
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(60)) {
    running.clear();
    for (int q : descendants(p.pid)) {
      std::ifstream comm("/proc/" + std::to_string(q) + "/comm");
      std::string name;
      std::getline(comm, name);
      if (name.rfind("python", 0) == 0) running.insert(q);
    }
    if (running.size() >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GE(running.size(), 2u) << test::read(p.err_path);
  const std::set<int> all = descendants(p.pid);
  ::kill(p.pid, signal);
  test::wait_process(p, 30);
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {
    gone = std::none_of(all.begin(), all.end(), alive);
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_TRUE(gone) << "a sandbox process outlived the evaluator (signal " << signal << ")";
  if (unsafe) {
    // SIGKILL leaves the unsafe run's host folder; the next unsafe run removes it.
    test::write(dir.file("ok.jsonl"), R"({"task_id": "t/return1", "completion": "    return 1\n"})"
                                      "\n"
                                      R"({"task_id": "t/add", "completion": "    return a + b\n"})"
                                      "\n");
    auto again =
        test::run_sft({"eval", "--benchmark", "humaneval", "--samples", dir.file("ok.jsonl"), "--data",
                       test::source_dir() + "/tests/fixtures/eval/problems.jsonl", "--unsafe-no-sandbox"},
                      {{"TMPDIR", tmp.path()}}, 120);
    EXPECT_EQ(again.exit_code, 0) << again.err;
  }
  DIR* d = ::opendir(tmp.path().c_str());
  std::vector<std::string> left;
  while (dirent* e = ::readdir(d))
    if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") left.push_back(e->d_name);
  ::closedir(d);
  EXPECT_TRUE(left.empty()) << "left in TMPDIR: " << (left.empty() ? "" : left[0]);
}

TEST_F(SandboxTest, AKilledEvaluatorLeavesNoProgramAndNoFolder) {
  expect_nothing_left_after_killing_the_evaluator(SIGKILL, false);
  expect_nothing_left_after_killing_the_evaluator(SIGTERM, false);
  expect_nothing_left_after_killing_the_evaluator(SIGKILL, true);
}

}  // namespace
}  // namespace sft::eval
