#include "sft/eval/jsonl.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "sft/util/error.h"
#include "sft/util/safe_io.h"
#include "sft/util/fs.h"

namespace sft::eval {

namespace {
InputLimits g_limits;

std::string too_large(const std::string& path, std::int64_t limit) {
  return path + ": holds more than " + std::to_string(limit) +
         " bytes (--max-input-bytes); a gzip bomb or the wrong file? (raise --max-input-bytes if it is real)";
}
}  // namespace

void set_input_limits(const InputLimits& limits) { g_limits = limits; }
const InputLimits& input_limits() { return g_limits; }

std::string read_maybe_gzip(const std::string& path) {
  if (!fs::exists(path)) throw DataError(path + ": file not found");
  const std::int64_t limit = g_limits.max_input_bytes;
  if (path.size() < 3 || path.compare(path.size() - 3, 3, ".gz") != 0) {
    if (static_cast<std::int64_t>(fs::file_size(path)) > limit) throw DataError(too_large(path, limit));
    return fs::read_file(path);
  }
  // `gzip -dc FILE` with the path as one argument (no shell), stdout read through a pipe.
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw DataError(path + ": pipe: " + std::strerror(errno));
  std::string gzip = "gzip", dc = "-dc", dashes = "--", file = path;
  char* argv[] = {gzip.data(), dc.data(), dashes.data(), file.data(), nullptr};
  pid_t pid = ::fork();
  if (pid < 0) throw DataError(path + ": fork: " + std::strerror(errno));
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::execvp("gzip", argv);
    ::_exit(127);
  }
  ::close(fds[1]);
  std::string out;
  char buf[1 << 16];
  bool over = false;
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n > 0)
      out.append(buf, static_cast<std::size_t>(n));
    else if (n == 0 || errno != EINTR)
      break;
    if (static_cast<std::int64_t>(out.size()) > limit) {
      over = true;
      ::kill(pid, SIGKILL);  // stop decompressing: the rest is never read
      break;
    }
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (over) throw DataError(too_large(path, limit));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw DataError(path + ": `gzip -dc` failed (exit status " +
                    std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) +
                    "); is the file a complete gzip file, and is gzip installed?");
  return out;
}

void for_each_json_line(const std::string& path,
                        const std::function<void(const nlohmann::json&, const std::string& where)>& f) {
  std::istringstream in(read_maybe_gzip(path));
  std::string line;
  std::int64_t no = 0;
  while (std::getline(in, line)) {
    ++no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(no);
    if (static_cast<std::int64_t>(line.size()) > g_limits.max_record_bytes)
      throw DataError(where + ": a line of " + std::to_string(line.size()) +
                      " bytes, above --max-record-bytes (" + std::to_string(g_limits.max_record_bytes) +
                      "); raise it if the line is real");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      throw DataError(where + ": malformed JSON: " + json_error_text(e));
    }
    if (!j.is_object()) throw DataError(where + ": expected a JSON object");
    f(j, where);
  }
}

std::string string_field(const nlohmann::json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) throw DataError(where + ": missing string field \"" + key + "\"");
  return it->get<std::string>();
}

}  // namespace sft::eval
