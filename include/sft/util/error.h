// Errors thrown by the sft library.
//
// Messages read "where: what is wrong; what to do". "Where" is a file:line, a config
// key path or a sample index. Callers add context as the error rises (see with_context).
// The CLI catches once, prints one rank-tagged line and exits with exit_code():
// 2 for bad input (usage, configuration and data errors), 75 when the run folder is in use
// by another process (retry later: sysexits' EX_TEMPFAIL), 1 for everything else.
#pragma once

#include <stdexcept>
#include <string>

namespace sft {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
  virtual int exit_code() const { return 1; }
};

// Bad command line or run configuration: exit code 2.
class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& msg) : Error(msg) {}
  // "file:line: key.path: message"; line <= 0 omits the line.
  ConfigError(const std::string& file, int line, const std::string& key, const std::string& msg);
  int exit_code() const override { return 2; }
};

// Malformed dataset, benchmark, predictions or samples file or record: bad input, exit code 2.
class DataError : public Error {
 public:
  explicit DataError(const std::string& msg) : Error(msg) {}
  int exit_code() const override { return 2; }
};

// Unreadable, truncated or corrupt checkpoint / safetensors file.
class CheckpointError : public Error {
 public:
  explicit CheckpointError(const std::string& msg) : Error(msg) {}
};

// The run folder is locked by another live process (util/run_lock.h): exit code 75.
class RunLockedError : public Error {
 public:
  explicit RunLockedError(const std::string& msg) : Error(msg) {}
  int exit_code() const override { return 75; }
};

// Prefixes `context + ": "` to any sft::Error's message, keeping its type's exit code.
[[noreturn]] void rethrow_with_context(const std::string& context);

}  // namespace sft
