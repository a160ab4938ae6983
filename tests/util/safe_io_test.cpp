// Files sft appends to never write through a link, input files are regular files (gzip
// decompressed), and JSON errors read without the library's numbering (safe_io.h). The lock
// file: run_lock_test.cpp; atomic writes: fs_test.cpp.
#include "sft/util/safe_io.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft {
namespace {

TEST(SafeIo, AppendingRefusesALinkAndAppendsToAFileOfItsOwn) {
  test::TempDir d;
  test::write(d.file("victim.txt"), "precious\n");
  ASSERT_EQ(::symlink(d.file("victim.txt").c_str(), d.file("metrics.jsonl").c_str()), 0);
  EXPECT_THROW(fs::open_append(d.file("metrics.jsonl")), Error);
  ASSERT_EQ(::link(d.file("victim.txt").c_str(), d.file("hard.jsonl").c_str()), 0);
  EXPECT_THROW(fs::open_append(d.file("hard.jsonl")), Error);
  EXPECT_EQ(test::read(d.file("victim.txt")), "precious\n");
  const int fd = fs::open_append(d.file("own.jsonl"));
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "x\n", 2), 2);
  ::close(fd);
  EXPECT_EQ(test::read(d.file("own.jsonl")), "x\n");
}

// A FIFO or a device never ends (hashing /dev/zero ran forever): refused before it is opened.
TEST(SafeIo, AnInputThatIsNotARegularFileIsRefusedAtOnce) {
  test::TempDir d;
  ASSERT_EQ(::mkfifo(d.file("fifo").c_str(), 0600), 0);
  for (const std::string& p : {d.file("fifo"), std::string("/dev/zero"), d.path()}) {
    try {
      fs::read_input_file(p, "datasets.x.path");
      FAIL() << p << " was read";
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find("not a regular file (datasets.x.path)"), std::string::npos)
          << e.what();
    }
  }
}

TEST(SafeIo, AGzipInputIsDecompressedAndATruncatedOneRefused) {
  test::TempDir d;
  test::write(d.file("a.jsonl"), "{\"x\": 1}\n{\"x\": 2}\n");
  ASSERT_EQ(test::run_program({"gzip", "-n", "-k", d.file("a.jsonl")}).exit_code, 0);
  EXPECT_EQ(fs::read_input_file(d.file("a.jsonl.gz"), "k"), "{\"x\": 1}\n{\"x\": 2}\n");
  EXPECT_EQ(fs::without_gz("a.txt.gz"), "a.txt");
  const std::string gz = test::read(d.file("a.jsonl.gz"));
  test::write(d.file("cut.jsonl.gz"), gz.substr(0, gz.size() - 6));
  EXPECT_THROW(fs::read_input_file(d.file("cut.jsonl.gz"), "k"), DataError);
  test::write(d.file("plain.gz"), "not gzip at all");
  EXPECT_THROW(fs::read_input_file(d.file("plain.gz"), "k"), DataError);
}

TEST(SafeIo, JsonErrorsLoseTheLibrarysNumbering) {
  try {
    (void)nlohmann::json::parse("{oops");
    FAIL();
  } catch (const nlohmann::json::parse_error& e) {
    const std::string t = json_error_text(e);
    EXPECT_EQ(t.find("[json.exception"), std::string::npos) << t;
    EXPECT_NE(t.find("parse error"), std::string::npos) << t;
  }
}

}  // namespace
}  // namespace sft
