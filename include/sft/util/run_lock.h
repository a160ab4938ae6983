// RunLock: one writer per run folder.
//
// An exclusive flock(2) on <dir>/sft.lock, held for the lifetime of the object. The kernel
// releases it when the process dies, however it dies, so a crash never leaves a stale lock
// and nothing ever has to be cleaned up by hand. The holder writes "pid host start-time
// command" into the file, so that a refused process can name who holds the folder.
//
// The lock file itself is never removed (removing it would let two processes lock two
// different files of the same name). flock works on local file systems and on NFS (Linux
// maps it onto NFS byte-range locks); on Lustre it needs the `flock` mount option.
#pragma once

#include <memory>
#include <string>

namespace sft {

class RunLock {
 public:
  // Creates `dir` if needed and takes its lock, or throws RunLockedError naming the holder
  // (exit code 75). A folder that cannot be created or written throws ConfigError naming
  // `what` (e.g. "output_dir").
  static std::unique_ptr<RunLock> acquire(const std::string& dir, const std::string& what = "output_dir");
  // Who holds `dir`'s lock now ("pid 123 on host n1 since ..."), or "" when nobody does
  // (or `dir` has no lock file). Probes by taking and releasing the lock at once.
  static std::string holder(const std::string& dir);
  static std::string lock_path(const std::string& dir);

  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  RunLock() = default;
  int fd_ = -1;
};

}  // namespace sft
