// File helpers: whole-file reads, crash-safe writes, read-only memory maps, checksums.
//
// write_file_atomic never leaves a half-written file under the final name: it writes a
// temporary sibling, fsyncs it, renames it over the target and fsyncs the directory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sft::fs {

std::string read_file(const std::string& path);  // throws sft::Error naming the path
void write_file_atomic(const std::string& path, std::string_view data);
void fsync_file(const std::string& path);
void fsync_dir(const std::string& dir);
bool exists(const std::string& path);
bool is_dir(const std::string& path);
void make_dirs(const std::string& dir);
void remove_all(const std::string& path);
std::string dirname(const std::string& path);
std::string basename(const std::string& path);
std::string join(const std::string& a, const std::string& b);
std::uint64_t file_size(const std::string& path);
std::vector<std::string> list_dir(const std::string& dir);  // names only, sorted

// Streams a file to `path` crash-safely: bytes go to a temporary sibling, commit() fsyncs
// and renames it into place. Destroying an uncommitted writer removes the temporary.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  void write(const void* data, std::size_t n);
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};

// A read-only private mapping of a whole file. Shared so that tensors built with
// from_blob can keep the mapping alive (capture the shared_ptr in the deleter).
class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace sft::fs
