#include "sft/util/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <thread>

#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft {
namespace {

std::string read_fd(int fd) {
  std::string s;
  char buf[512];
  ssize_t n;
  off_t off = 0;
  while ((n = ::pread(fd, buf, sizeof buf, off)) > 0) {
    s.append(buf, static_cast<std::size_t>(n));
    off += n;
  }
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// The holder writes its line right after taking the lock: give it a moment to appear.
std::string holder_line(int fd) {
  for (int i = 0; i < 20; ++i) {
    std::string s = read_fd(fd);
    if (!s.empty()) return s;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return "a process that has not yet said who it is";
}

std::string self_line() {
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  const std::time_t now = std::time(nullptr);
  char when[64];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  std::string cmd;
  if (std::string c =
          [] {
            try {
              return fs::read_file("/proc/self/cmdline");
            } catch (...) {
              return std::string();
            }
          }();
      !c.empty()) {
    for (char& ch : c)
      if (ch == '\0') ch = ' ';
    cmd = c.substr(0, 300);
    while (!cmd.empty() && cmd.back() == ' ') cmd.pop_back();
  }
  return "pid " + std::to_string(::getpid()) + " on host " + host + " since " + when +
         (cmd.empty() ? "" : " (" + cmd + ")");
}

}  // namespace

std::string RunLock::lock_path(const std::string& dir) { return fs::join(dir, "sft.lock"); }

std::unique_ptr<RunLock> RunLock::acquire(const std::string& dir, const std::string& what) {
  try {
    fs::make_dirs(dir);
  } catch (const std::exception& e) {
    throw ConfigError(what + ": cannot create " + dir + " (" + e.what() + "); choose a folder you can write");
  }
  const std::string path = lock_path(dir);
  // Never through a link: the holder line is written into this file, and a sft.lock that
  // is a symbolic link (or a second name of another file) would overwrite what it points to.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
  if (fd < 0 && errno == ELOOP)
    throw ConfigError(what + ": " + path +
                      " is a symbolic link; sft writes its lock file only as a file of its own "
                      "(remove the link, or choose another --output-dir)");
  if (fd < 0)
    throw ConfigError(what + ": cannot write " + path + " (" + std::strerror(errno) +
                      "); choose a folder you can write");
  if (struct stat st{}; ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
    const bool linked = S_ISREG(st.st_mode) && st.st_nlink > 1;
    ::close(fd);
    throw ConfigError(
        what + ": " + path +
        (linked ? " has another hard link (it is also another file's name)" : " is not a regular file") +
        "; sft writes its lock file only as a file of its own (remove it, or choose another --output-dir)");
  }
  // A sweep probing the folder (holder()) holds a shared lock for a moment: retry briefly
  // before calling the folder taken.
  int locked = -1;
  for (int attempt = 0;
       attempt < 25 && (locked = ::flock(fd, LOCK_EX | LOCK_NB)) != 0 && errno == EWOULDBLOCK; ++attempt)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (locked != 0) {
    const int err = errno;
    std::string who = err == EWOULDBLOCK ? holder_line(fd) : std::string();
    ::close(fd);
    if (err != EWOULDBLOCK)
      throw ConfigError(what + ": cannot lock " + path + " (" + std::strerror(err) +
                        "); the file system must support flock (Lustre: mount with -o flock)");
    throw RunLockedError(dir + ": in use by " + who +
                         "; two processes must not write one run folder: wait for it " +
                         "to finish (or stop it), or choose another --output-dir");
  }
  auto lock = std::unique_ptr<RunLock>(new RunLock());
  lock->fd_ = fd;
  const std::string line = self_line() + "\n";
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, line.data(), line.size(), 0) != static_cast<ssize_t>(line.size()))
    throw ConfigError(what + ": cannot write " + path + " (" + std::strerror(errno) + ")");
  return lock;
}

std::string RunLock::holder(const std::string& dir) {
  const std::string path = lock_path(dir);
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return "";
  if (struct stat st{};
      ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {  // not a lock of sft's (acquire says why)
    ::close(fd);
    return "";
  }
  std::string who;
  if (::flock(fd, LOCK_SH | LOCK_NB) == 0)
    ::flock(fd, LOCK_UN);
  else
    who = holder_line(fd);
  ::close(fd);
  return who;
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the lock
}

}  // namespace sft
