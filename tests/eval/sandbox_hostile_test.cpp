// The HumanEval sandbox against a hostile-input campaign: each test reproduces one attack
// that worked (a sample typing into the user's terminal, mounts appearing mid-run, the
// caller's private files without root, memory across processes, CPU starvation of a
// neighbour, the kernel keyring, forging a pass from inside the interpreter) and shows
// that it now fails, with a control that the attack is real where the test can give one.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "sft/eval/sandbox.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft::eval {
namespace {

class SandboxHostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!sandbox_available(&why)) GTEST_SKIP() << "sandbox unavailable here: " << why;
  }
  static SandboxOptions opts() {
    SandboxOptions o;
    o.workers = 2;
    o.timeout_s = 8;
    return o;
  }
};

// A folder outside /tmp (the sandbox hides the host's /tmp), removed at the end.
struct HostDir {
  std::string path;
  explicit HostDir(const std::string& name) : path("/var/tmp/" + name + "_" + std::to_string(::getpid())) {
    fs::remove_all(path);
    fs::make_dirs(path);
    ::chmod(path.c_str(), 0755);
  }
  ~HostDir() { fs::remove_all(path); }
};

// Reads everything from `fd` until EOF or `timeout_s`.
std::string drain(int fd, double timeout_s) {
  std::string out;
  const auto start = std::chrono::steady_clock::now();
  char buf[4096];
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < timeout_s) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;  // EOF, or EIO once the terminal's last user is gone
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

// Runs `body` in a forked child (which may change its identity first) and returns what it
// printed to the pipe; the child must finish within `timeout_s`.
std::string in_child(const std::function<std::string()>& body, int timeout_s = 120) {
  int p[2];
  if (::pipe(p) != 0) throw std::runtime_error("pipe");
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    std::string out;
    try {
      out = body();
    } catch (const std::exception& e) {
      out = std::string("exception: ") + e.what();
    }
    ssize_t n = ::write(p[1], out.data(), out.size());
    ::_exit(n == static_cast<ssize_t>(out.size()) ? 0 : 1);
  }
  ::close(p[1]);
  const std::string out = drain(p[0], timeout_s);
  ::close(p[0]);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return out;
}

std::string results_json(const std::vector<ExecResult>& r) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& x : r)
    j.push_back({{"passed", x.passed}, {"result", x.result}, {"stderr", x.stderr_tail}});
  return j.dump();
}

// ---- 1. the user's terminal ----------------------------------------------------------

// Python lines that try every way to reach a terminal: /dev/tty, the standard descriptors
// and any /dev/pts entry; they write MARK to it and push "touch TOUCHED" as keystrokes.
std::string terminal_attack(const std::string& indent, const std::string& touched) {
  const std::vector<std::string> lines = {
      "import os, fcntl, termios",
      "fds = []",
      "pts = os.listdir('/dev/pts') if os.path.isdir('/dev/pts') else []",
      "for path in ['/dev/tty'] + ['/dev/pts/' + n for n in pts]:",
      "    try:",
      "        fds.append(os.open(path, os.O_RDWR | os.O_NOCTTY))",
      "    except OSError:",
      "        pass",
      "for fd in fds + [0, 1, 2]:",
      "    try:",
      "        os.write(fd, b'SFT_TTY_MARK')",
      "    except OSError:",
      "        pass",
      "    try:",
      "        for c in b'touch " + touched + "\\n':",
      "            fcntl.ioctl(fd, termios.TIOCSTI, bytes([c]))",
      "    except OSError:",
      "        pass",
  };
  std::string out;
  for (const auto& l : lines) out += indent + l + "\n";
  return out;
}

// Runs `command` with bash on a new terminal (as a login shell would: the terminal is its
// controlling terminal), then lets the shell run the next line typed on that terminal, the
// way the user's shell would after sft exits. Returns what the terminal showed.
std::string on_a_terminal(const std::string& command) {
  int master = -1;
  const pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  if (pid < 0) throw std::runtime_error("forkpty failed");
  if (pid == 0) {
    const std::string script = command + "; read -t 3 line; eval \"$line\"";
    ::execl("/bin/bash", "bash", "-c", script.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const std::string shown = drain(master, 120);
  ::close(master);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return shown;
}

TEST_F(SandboxHostileTest, ASampleCannotTypeIntoOrWriteToTheUsersTerminal) {
  test::TempDir dir;
  const std::string touched = dir.file("PWNED");
  // The control: the same code run directly on the terminal types a command the shell runs.
  test::write(dir.file("attack.py"), terminal_attack("", touched));
  const std::string direct = on_a_terminal("/usr/bin/python3 -I " + dir.file("attack.py"));
  ASSERT_TRUE(fs::exists(touched)) << "the control attack did not reach the terminal:\n" << direct;
  EXPECT_NE(direct.find("SFT_TTY_MARK"), std::string::npos) << direct;
  ::unlink(touched.c_str());

  const std::string completion = terminal_attack("    ", touched) + "    return 1\n";
  test::write(dir.file("tty.jsonl"),
              nlohmann::json{{"task_id", "t/return1"}, {"completion", completion}}.dump() + "\n");
  const std::string shown = on_a_terminal(
      test::sft_binary() + " eval --benchmark humaneval --samples " + dir.file("tty.jsonl") + " --data " +
      test::source_dir() + "/tests/fixtures/eval/problems.jsonl --limit 1 --out " + dir.file("results.json"));
  EXPECT_FALSE(fs::exists(touched)) << "a sample typed a command into the terminal:\n" << shown;
  EXPECT_EQ(shown.find("SFT_TTY_MARK"), std::string::npos) << "a sample wrote to the terminal:\n" << shown;
  // The sample ran to its end (so every attempt was made).
  ASSERT_TRUE(fs::exists(dir.file("results.json"))) << shown;
  auto r = nlohmann::json::parse(test::read(dir.file("results.json")));
  EXPECT_TRUE(r["samples"][0]["passed"].get<bool>()) << r["samples"][0]["result"];
}

TEST_F(SandboxHostileTest, IoctlsThatPushKeystrokesAreRefused) {
  // On /dev/null the kernel answers ENOTTY; the filter answers EPERM before it looks.
  auto r = run_programs({"import errno, fcntl, termios\n"
                         "for cmd in (termios.TIOCSTI, 0x541C):  # TIOCLINUX\n"
                         "    try:\n"
                         "        fcntl.ioctl(0, cmd, b'x')\n"
                         "    except OSError as e:\n"
                         "        assert e.errno == errno.EPERM, e\n"},
                        opts());
  EXPECT_TRUE(r[0].passed) << r[0].result << "\n" << r[0].stderr_tail;
}

// ---- 6. forging a pass from inside the interpreter ----------------------------------

// Each program tries to pass without running to its end: it finds the harness's secret or
// skips the check, then exits with status 0.
TEST_F(SandboxHostileTest, AttacksOnTheHarnessFromInsideTheInterpreterFail) {
  const std::string find_secret_in_frames =
      "def forge(f):\n"
      "    while f is not None:\n"
      "        for v in f.f_locals.values():\n"
      "            if isinstance(v, (bytes, bytearray)) and len(v) == 32:\n"
      "                os.write(4, v)\n"
      "                os._exit(0)\n"
      "        f = f.f_back\n";
  const std::vector<std::pair<std::string, std::string>> attacks = {
      {"sys._getframe", "import os, sys\n" + find_secret_in_frames + "forge(sys._getframe())\n"},
      {"a generator's frame", "import os\n" + find_secret_in_frames +
                                  "def g():\n    yield gen.gi_frame\ngen = g()\nforge(next(gen))\n"},
      {"a traceback's frame",
       "import os\n" + find_secret_in_frames +
           "try:\n    raise KeyError\nexcept KeyError as e:\n    forge(e.__traceback__.tb_frame)\n"},
      {"gc.get_objects",
       "import gc, os, types\n" + find_secret_in_frames +
           "for o in gc.get_objects():\n    if isinstance(o, types.FrameType):\n        forge(o)\n"},
      {"gc.get_referrers", "import gc, os, types\n" + find_secret_in_frames +
                               "for o in gc.get_referrers(forge.__globals__):\n    if isinstance(o, "
                               "types.FrameType):\n        forge(o)\n"},
      {"a profile hook",
       "import os, sys\n" + find_secret_in_frames + "sys.setprofile(lambda f, e, a: forge(f))\nlen('x')\n"},
      {"a trace hook that skips the failing line",
       "import sys\n"
       "def skip(frame, event, arg):\n"
       "    if event == 'line' and frame.f_code.co_name == 'check' and frame.f_lineno == 9:\n"
       "        frame.f_lineno = 10\n"
       "    return skip\n"
       "sys.settrace(skip)\n"
       "def check(candidate):\n"
       "    if True:\n"
       "        assert candidate() == 7\n"
       "    print('skipped the check')\n"
       "check(lambda: 1)\n"},
      {"ctypes over the process's memory",
       "import ctypes, os, re\n"
       "for line in open('/proc/self/maps'):\n"
       "    m = re.match(r'([0-9a-f]+)-([0-9a-f]+) rw', line)\n"
       "    if m:\n"
       "        data = ctypes.string_at(int(m.group(1), 16), int(m.group(2), 16) - int(m.group(1), 16))\n"
       "        for s in re.findall(rb'(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])', data):\n"
       "            os.write(4, s)\n"
       "            os._exit(0)\n"},
      {"/proc/self/mem",
       "import os, re\n"
       "maps = open('/proc/self/maps').read()\n"
       "mem = open('/proc/self/mem', 'rb')\n"
       "for m in re.finditer(r'([0-9a-f]+)-([0-9a-f]+) rw', maps):\n"
       "    mem.seek(int(m.group(1), 16))\n"
       "    try:\n"
       "        data = mem.read(int(m.group(2), 16) - int(m.group(1), 16))\n"
       "    except OSError:\n"
       "        continue\n"
       "    for s in re.findall(rb'(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])', data):\n"
       "        os.write(4, s)\n"
       "        break\n"
       "os._exit(0)\n"},
      {"the check's code object",
       "def answer():\n"
       "    return next(c for c in check.__code__.co_consts if isinstance(c, int))\n"
       "def check(candidate):\n"
       "    assert candidate() == 7\n"
       "check(answer)\n"},
      {"the program's own text",
       "def check(candidate):\n"
       "    assert candidate() == 7\n"
       "check(lambda: int(open('prog.py').read().split('== ')[1].split()[0]))\n"},
  };
  std::vector<std::string> programs;
  for (const auto& a : attacks) programs.push_back(a.second);
  auto r = run_programs(programs, opts(), PassRule::harness);
  for (std::size_t i = 0; i < attacks.size(); ++i)
    EXPECT_FALSE(r[i].passed) << attacks[i].first << " forged a pass: " << r[i].result << "\n"
                              << r[i].stderr_tail;
}

// What the in-interpreter check cannot stop (docs/evaluation.md, trust model): a value whose == is
// always true, and a builtin the test relies on that the completion replaced, pass assert.
// If this ever fails, the harness got stronger: update docs/evaluation.md.
TEST_F(SandboxHostileTest, WrongAnswersThatFoolAssertStillPassAsDocumented) {
  auto r = run_programs({"class Any:\n    def __eq__(self, other):\n        return True\n"
                         "def check(candidate):\n    assert candidate() == 7\ncheck(lambda: Any())\n",
                         "import builtins\nbuiltins.abs = lambda x: 0\n"
                         "def check(candidate):\n    assert abs(candidate() - 7) < 1e-6\ncheck(lambda: 1)\n"},
                        opts(), PassRule::harness);
  EXPECT_TRUE(r[0].passed) << r[0].result << "\n" << r[0].stderr_tail;
  EXPECT_TRUE(r[1].passed) << r[1].result << "\n" << r[1].stderr_tail;
}

// The harness's guards leave ordinary programs alone: the standard library's own uses of
// frames and code objects (namedtuple, enum, typing, logging, dataclasses, asyncio) work.
TEST_F(SandboxHostileTest, OrdinaryLibrariesStillWorkUnderTheHarness) {
  auto r = run_programs(
      {"import asyncio, collections, dataclasses, enum, functools, logging, typing, warnings\n"
       "P = collections.namedtuple('P', 'x y')\n"
       "E = enum.Enum('E', 'A B')\n"
       "class N(typing.NamedTuple):\n    a: int\n"
       "@dataclasses.dataclass\nclass D:\n    a: int = 1\n"
       "logging.warning('logged')\n"
       "warnings.warn('warned')\n"
       "@functools.lru_cache(None)\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
       "async def main():\n    await asyncio.sleep(0)\n    return 3\n"
       "got = (P(1, 2).y, E.B.value, N(5).a, D().a, fib(30), asyncio.run(main()))\n"
       "assert got == (2, 2, 5, 1, 832040, 3), got\n"},
      opts(), PassRule::harness);
  EXPECT_TRUE(r[0].passed) << r[0].result << "\n" << r[0].stderr_tail;
}

// ---- 7. mounts made on the host during a run ---------------------------------------

TEST_F(SandboxHostileTest, MountsMadeDuringARunAreReadOnlyToLaterSamples) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  HostDir dir("sft_sandbox_mnt");
  struct Unmount {
    std::string path;
    bool mounted = false;
    ~Unmount() {
      if (mounted) ::umount2(path.c_str(), MNT_DETACH);
    }
  } unmount{dir.path};
  SandboxOptions o = opts();
  o.workers = 1;
  o.timeout_s = 20;
  // The first program sleeps while the host mounts a world-writable tmpfs; the second
  // starts after the mount and tries to write into it.
  auto run = std::async(std::launch::async, [&] {
    return run_programs(
        {"import time\ntime.sleep(3)\n", "open('" + dir.path + "/escaped', 'w').write('x')\n"}, o);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ASSERT_EQ(::mount("tmpfs", dir.path.c_str(), "tmpfs", 0, "size=1m,mode=1777"), 0) << std::strerror(errno);
  unmount.mounted = true;
  auto r = run.get();
  EXPECT_TRUE(r[0].passed) << r[0].result;
  EXPECT_FALSE(r[1].passed) << "a later sample wrote into a mount made during the run";
  EXPECT_NE(r[1].result.find("Read-only file system"), std::string::npos) << r[1].result;
  EXPECT_FALSE(fs::exists(dir.path + "/escaped"));
}

// ---- 8. the caller's own files without root ---------------------------------------

// A program that prints the first line of `path` (so a pass means it read it).
std::string reader(const std::string& path) { return "print(open('" + path + "').readline())\n"; }

TEST_F(SandboxHostileTest, WithoutRootASampleReadsNoFileThatIsPrivateToTheCaller) {
  if (::geteuid() != 0) GTEST_SKIP() << "the test switches identities (nobody, a user namespace) from root";
  HostDir dir("sft_sandbox_private");
  const std::string mine = dir.path + "/mine.txt", nobodys = dir.path + "/nobodys.txt";
  test::write(mine, "root's secret\n");
  test::write(nobodys, "nobody's secret\n");
  ::chmod(mine.c_str(), 0600);
  ::chmod(nobodys.c_str(), 0600);
  ASSERT_EQ(::chown(nobodys.c_str(), 65534, 65534), 0);
  const std::string world_readable = "/etc/debian_version";
  SandboxOptions o = opts();

  // As root: the program runs as a uid of its own.
  auto r = run_programs({reader(mine), reader(world_readable)}, o);
  EXPECT_FALSE(r[0].passed) << "as root, a sample read a mode-600 file of root's";
  EXPECT_TRUE(r[1].passed) << r[1].result;

  // As nobody (no root: a user namespace), the caller's own mode-600 file.
  const std::string nobody_out = in_child([&] {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
        ::setresuid(65534, 65534, 65534) != 0)
      return std::string("cannot become nobody");
    ::prctl(PR_SET_DUMPABLE, 1);  // as a process nobody started would be (a uid change clears it)
    return results_json(run_programs({reader(nobodys), reader(world_readable)}, o));
  });
  ASSERT_EQ(nobody_out.rfind("[", 0), 0u) << nobody_out;
  auto as_nobody = nlohmann::json::parse(nobody_out);
  EXPECT_FALSE(as_nobody[0]["passed"].get<bool>()) << "as nobody, a sample read nobody's mode-600 file";
  EXPECT_TRUE(as_nobody[1]["passed"].get<bool>()) << as_nobody[1];

  // As root inside a user namespace that maps only root (no uid of its own to switch to):
  // the user-namespace sandbox, with the caller being root.
  const std::string mapped_root_out = in_child([&] {
    if (::unshare(CLONE_NEWUSER) != 0) return std::string("unshare failed");
    test::write("/proc/self/setgroups", "deny");
    test::write("/proc/self/uid_map", "0 0 1\n");
    test::write("/proc/self/gid_map", "0 0 1\n");
    return results_json(run_programs({reader("/etc/shadow"), reader(mine), reader(world_readable)}, o));
  });
  ASSERT_EQ(mapped_root_out.rfind("[", 0), 0u) << mapped_root_out;
  auto as_mapped_root = nlohmann::json::parse(mapped_root_out);
  EXPECT_FALSE(as_mapped_root[0]["passed"].get<bool>()) << "under a mapped root, a sample read /etc/shadow";
  EXPECT_FALSE(as_mapped_root[1]["passed"].get<bool>())
      << "under a mapped root, a sample read a mode-600 file";
  EXPECT_TRUE(as_mapped_root[2]["passed"].get<bool>()) << as_mapped_root[2];
}

// ---- 9. memory across a sample's processes ----------------------------------------

TEST_F(SandboxHostileTest, ASamplesMemoryIsBoundedAcrossAllItsProcesses) {
  std::string why;
  if (!sandbox_cgroups_available(&why)) GTEST_SKIP() << "no cgroup per sample here: " << why;
  SandboxOptions o = opts();
  o.memory_mb = 256;
  o.workers = 3;
  // Four processes of 150 MiB each, every one within its own 256 MiB address space.
  const std::string processes =
      "import os, time\n"
      "pids = []\n"
      "for i in range(3):\n"
      "    pid = os.fork()\n"
      "    if pid == 0:\n"
      "        b = b'x' * (150 << 20)\n"
      "        time.sleep(1.5)\n"
      "        os._exit(0)\n"
      "    pids.append(pid)\n"
      "b = b'x' * (150 << 20)\n"
      "time.sleep(1.5)\n"
      "assert all(os.waitpid(p, 0)[1] == 0 for p in pids), 'a process was killed'\n";
  // 320 MiB in memory files, which no address-space limit sees.
  const std::string memfds =
      "import os\n"
      "fds = [os.memfd_create('m%d' % i) for i in range(20)]\n"
      "for fd in fds:\n"
      "    os.write(fd, b'x' * (16 << 20))\n";
  auto r = run_programs({processes, memfds, "print(sum(range(10)))\n"}, o);
  EXPECT_EQ(r[0].result, "failed: out of memory (the sample's processes together exceeded 256 MiB)")
      << "600 MiB over four processes in a 256 MiB sample";
  EXPECT_NE(r[1].result.find("PermissionError"), std::string::npos)
      << "320 MiB of memory files: " << r[1].result;
  EXPECT_TRUE(r[2].passed) << r[2].result;
}

// ---- 14. CPU share ---------------------------------------------------------------

TEST_F(SandboxHostileTest, ASampleSpinningInManyProcessesDoesNotStarveItsNeighbour) {
  std::string why;
  if (!sandbox_cgroups_available(&why)) GTEST_SKIP() << "no cgroup per sample here: " << why;
  SandboxOptions o = opts();
  o.workers = 2;
  o.timeout_s = 8;
  const std::string spinner =
      "import os\n"
      "for i in range(60):\n"
      "    if os.fork() == 0:\n"
      "        break\n"
      "while True:\n"
      "    pass\n";
  // About 0.4 s of CPU: well inside the timeout with a fair share of a CPU, not with 1/60.
  const std::string neighbour = "assert sum(i * i for i in range(6000000)) > 0\n";
  auto r = run_programs({spinner, neighbour}, o);
  EXPECT_EQ(r[0].result, "timed out");
  EXPECT_TRUE(r[1].passed) << "the neighbour of a spinning sample: " << r[1].result << " after "
                           << r[1].seconds << " s";
}

// ---- 15. the kernel keyring -------------------------------------------------------

TEST_F(SandboxHostileTest, AKeyAddedByOneSampleIsInvisibleToTheNext) {
  SandboxOptions o = opts();
  o.workers = 1;  // the same worker uid, one after the other
  const std::string libc =
      "import ctypes\n"
      "libc = ctypes.CDLL(None, use_errno=True)\n"
      "libc.syscall.restype = ctypes.c_long\n"
      "L = ctypes.c_long\n";
  const std::string add = libc + "key = libc.syscall(" + std::to_string(SYS_add_key) +
                          ", b'user', b'sft_sandbox_key', b'secret', L(6), L(-4))  # the user keyring\n"
                          "assert key >= 0, 'add_key: errno %d' % ctypes.get_errno()\n";
  const std::string find = libc + "key = libc.syscall(" + std::to_string(SYS_request_key) +
                           ", b'user', b'sft_sandbox_key', None, L(0))\n"
                           "assert key < 0, 'found the key an earlier sample added'\n"
                           "assert 'sft_sandbox_key' not in open('/proc/keys').read()\n";
  auto r = run_programs({add, find}, o);
  // EPERM: the filter refused it.
  EXPECT_NE(r[0].result.find("add_key: errno 1"), std::string::npos)
      << "a sample added a key: " << r[0].result;
  EXPECT_TRUE(r[1].passed) << r[1].result << "\n" << r[1].stderr_tail;
}

}  // namespace
}  // namespace sft::eval
