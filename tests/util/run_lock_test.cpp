// The run folder's lock file (run_lock.h) is never taken through a link: its holder line
// would land in the file the link points to.
#include "sft/util/run_lock.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft {
namespace {

// The lock's holder line must not land in the file a planted sft.lock link points to.
TEST(RunLock, ALockFileThatIsASymbolicLinkIsRefusedAndItsTargetStays) {
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

TEST(RunLock, ALockFileWithASecondHardLinkIsRefusedAndTheOtherNameStays) {
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

}  // namespace
}  // namespace sft
