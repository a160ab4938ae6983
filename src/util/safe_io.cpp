#include "sft/util/safe_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "sft/util/fs.h"

namespace sft {

namespace fs {
namespace {

std::string errno_text() { return std::strerror(errno); }

}  // namespace

int create_exclusive(const std::string& path, int mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0 && errno == EEXIST && ::unlink(path.c_str()) == 0)
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) throw Error(path + ": cannot create: " + errno_text());
  return fd;
}

int open_append(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (errno == ELOOP)
      throw Error(
          path +
          ": is a symbolic link; sft does not write through links (remove it, or choose another folder)");
    throw Error(path + ": cannot open for appending: " + errno_text());
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
    const bool linked = S_ISREG(st.st_mode) && st.st_nlink > 1;
    ::close(fd);
    throw Error(path +
                (linked ? ": has another hard link (another file's name); sft does not write through links"
                        : ": is not a regular file") +
                " (remove it, or choose another folder)");
  }
  return fd;
}

void require_regular_file(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw DataError(path + ": " + (errno == ENOENT ? "not found" : "cannot be read (" + errno_text() + ")") +
                    " (" + what + ")");
  if (S_ISREG(st.st_mode)) return;
  const char* kind = S_ISDIR(st.st_mode)                          ? "a folder"
                     : S_ISFIFO(st.st_mode)                       ? "a FIFO"
                     : S_ISSOCK(st.st_mode)                       ? "a socket"
                     : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device"
                                                                  : "not a plain file";
  throw DataError(path + ": is " + std::string(kind) + ", not a regular file (" + what + ")");
}

bool is_gzip_name(const std::string& path) {
  return path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0;
}

std::string without_gz(const std::string& path) {
  return is_gzip_name(path) ? path.substr(0, path.size() - 3) : path;
}

std::string read_input_file(const std::string& path, const std::string& what) {
  require_regular_file(path, what);
  std::string raw = read_file(path);
  if (!is_gzip_name(path)) return raw;
  // Every gzip member in turn (a concatenation of gzip files is one gzip file).
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) throw Error(path + ": zlib cannot start");
  std::string out;
  z.next_in = reinterpret_cast<Bytef*>(raw.data());
  z.avail_in = static_cast<uInt>(std::min<std::size_t>(raw.size(), UINT32_MAX));
  std::size_t fed = z.avail_in;
  char buf[1 << 16];
  int rc = Z_OK;
  for (;;) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    out.append(buf, sizeof buf - z.avail_out);
    if (z.avail_in == 0 && fed < raw.size()) {  // files past 4 GiB: the next slice
      z.next_in = reinterpret_cast<Bytef*>(raw.data() + fed);
      z.avail_in = static_cast<uInt>(std::min<std::size_t>(raw.size() - fed, UINT32_MAX));
      fed += z.avail_in;
    }
    if (rc == Z_STREAM_END) {
      if (z.avail_in == 0) break;
      inflateReset(&z);  // another member follows
      continue;
    }
    if (rc != Z_OK && !(rc == Z_BUF_ERROR && z.avail_in > 0)) break;
  }
  inflateEnd(&z);
  if (rc != Z_STREAM_END)
    throw DataError(path + ": " +
                    (rc == Z_BUF_ERROR ? "the gzip data ends early (truncated?)" : "not valid gzip data") +
                    " (" + what + ")");
  return out;
}

}  // namespace fs
}  // namespace sft
