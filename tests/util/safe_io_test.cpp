// Files sft creates never write through a link (safe_io.h, run_lock.h), and input files are
// regular files, gzip decompressed.
#include "sft/util/safe_io.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/run_lock.h"
#include "test_util.h"

namespace sft {
namespace {

// The lock's holder line must not land in the file a planted sft.lock link points to.
TEST(SafeIo, ALockFileThatIsASymbolicLinkIsRefusedAndItsTargetStays) {
  test::TempDir d;
  test::write(d.file("victim.txt"), "precious\n");
  fs::make_dirs(d.file("run"));
  ASSERT_EQ(::symlink(d.file("victim.txt").c_str(), d.file("run/sft.lock").c_str()), 0);
  try {
    RunLock::acquire(d.file("run"));
    FAIL() << "acquired a lock through a symbolic link";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("is a symbolic link"), std::string::npos) << e.what();
  }
  EXPECT_EQ(test::read(d.file("victim.txt")), "precious\n");
}

TEST(SafeIo, ALockFileWithASecondHardLinkIsRefusedAndTheOtherNameStays) {
  test::TempDir d;
  test::write(d.file("victim.txt"), "precious\n");
  fs::make_dirs(d.file("run"));
  ASSERT_EQ(::link(d.file("victim.txt").c_str(), d.file("run/sft.lock").c_str()), 0);
  EXPECT_THROW(RunLock::acquire(d.file("run")), ConfigError);
  EXPECT_EQ(test::read(d.file("victim.txt")), "precious\n");
  // A lock file of its own is taken as before.
  test::TempDir e;
  EXPECT_TRUE(RunLock::acquire(e.file("run")) != nullptr);
}

// A temporary's name planted as a link: the link is replaced, what it points to is not written.
TEST(SafeIo, AnAtomicWriteNeverWritesThroughAPlantedTemporary) {
  test::TempDir d;
  test::write(d.file("victim.txt"), "precious\n");
  const std::string target = d.file("out.json");
  ASSERT_EQ(::symlink(d.file("victim.txt").c_str(), (target + ".tmp." + std::to_string(::getpid())).c_str()),
            0);
  fs::write_file_atomic(target, "{}\n");
  EXPECT_EQ(test::read(target), "{}\n");
  EXPECT_EQ(test::read(d.file("victim.txt")), "precious\n");
}

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
