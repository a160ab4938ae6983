// Safe input and output: files read as input (datasets: regular files only, gzip
// decompressed), files created and appended to without writing through a link, and library
// error texts fit for a user.
//
// Files sft creates never write through a link: temporaries are created exclusively
// (O_CREAT | O_EXCL | O_NOFOLLOW: a planted symbolic link or file of the same name is not
// opened), then renamed over the target (which replaces a link rather than writing through
// it); files sft appends to (open_append) are opened with O_NOFOLLOW and refused unless they
// are regular files with one link (a second hard link could be someone else's file).
#pragma once

#include <exception>
#include <string>

#include "sft/util/error.h"

namespace sft {

// A JSON library exception's text without its "[json.exception.parse_error.101] " tag: what
// a user reads is the position and the problem, not the library's error numbering.
std::string json_error_text(const std::exception& e);

// Runs `f`, reporting a CheckpointError (a truncated or corrupt safetensors file, weights
// that do not match config.json) as a DataError: for a model folder the user named
// (model.path, --model) that is bad input (exit code 2), not a failure of sft's own checkpoints.
template <class F>
auto as_input_error(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const CheckpointError& e) {
    throw DataError(e.what());
  }
}

namespace fs {

// An input file read whole (a dataset): DataError naming `what` (e.g. "datasets.math.path")
// unless `path` is a regular file; a folder, FIFO, socket or device (/dev/zero, /dev/urandom)
// would fail, block or never end.
void require_regular_file(const std::string& path, const std::string& what);
// The bytes of a regular input file; a name ending in ".gz" is decompressed (gzip, zlib).
// DataError naming the file when it is not gzip or is truncated.
std::string read_input_file(const std::string& path, const std::string& what);
bool is_gzip_name(const std::string& path);
// The name without a trailing ".gz" ("a.txt.gz" -> "a.txt"): what the bytes are.
std::string without_gz(const std::string& path);

// Opens `path` to append to it (created 0644 when absent) without following a symbolic
// link; Error unless it is a regular file with one link. Returns the descriptor (O_CLOEXEC).
int open_append(const std::string& path);
// Creates `path` exclusively (O_EXCL | O_NOFOLLOW), first unlinking a leftover of that name
// (a temporary of a crashed process with the same PID, or a planted link: the link goes, its
// target is untouched). Returns the descriptor (O_CLOEXEC).
int create_exclusive(const std::string& path, int mode = 0644);

}  // namespace fs
}  // namespace sft
