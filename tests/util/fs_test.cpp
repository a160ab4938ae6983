// Atomic writes (fs.h) create their temporary exclusively: a link planted under its name is
// replaced, never written through.
#include "sft/util/fs.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "test_util.h"

namespace sft {
namespace {

// A temporary's name planted as a link: the link is replaced, what it points to is not written.
TEST(Fs, AnAtomicWriteNeverWritesThroughAPlantedTemporary) {
  test::TempDir d;
  test::write(d.file("victim.txt"), "precious\n");
  const std::string target = d.file("out.json");
  ASSERT_EQ(::symlink(d.file("victim.txt").c_str(), (target + ".tmp." + std::to_string(::getpid())).c_str()),
            0);
  fs::write_file_atomic(target, "{}\n");
  EXPECT_EQ(test::read(target), "{}\n");
  EXPECT_EQ(test::read(d.file("victim.txt")), "precious\n");
}

}  // namespace
}  // namespace sft
