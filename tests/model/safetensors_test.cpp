// Safetensors: a corpus of malformed files, each with its specific error; a bounded fuzz
// run of the header parser; round trips.
#include "sft/model/safetensors.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "sft/train/memory_tracker.h"
#include "sft/util/error.h"
#include "sft/util/hash.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft::model {
namespace {

std::string file_with(const std::string& header, const std::string& data, std::int64_t len_override = -1) {
  std::uint64_t n = len_override >= 0 ? static_cast<std::uint64_t>(len_override) : header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

struct Malformed {
  const char* name;
  std::string bytes;
  const char* error;
};

std::vector<Malformed> corpus() {
  const std::string f32x2(8, '\x01');
  return {
      {"short", "\x05\x00\x00", "fewer than the 8-byte header length"},
      {"length_past_end", file_with("{}", "", 4096), "exceeds the file"},
      {"length_huge", file_with("{}", "", std::int64_t(1) << 40), "exceeds the 100 MiB limit"},
      {"not_json", file_with("{\"a\": [1,", f32x2), "malformed header JSON"},
      {"not_object", file_with("[1, 2, 3]  ", ""), "the header is not a JSON object"},
      {"unknown_dtype", file_with(R"({"w":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", f32x2),
       "unknown dtype \"Q7\""},
      {"negative_shape", file_with(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f32x2),
       "shape entries must be non-negative integers"},
      {"past_data", file_with(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", f32x2),
       "is past the data area"},
      {"begin_after_end", file_with(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", f32x2),
       "begin 8 > end 0"},
      {"wrong_byte_length", file_with(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f32x2),
       "holds 8 bytes but dtype F32 x shape needs 12"},
      {"overlap",
       file_with(
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
           f32x2),
       "overlaps the previous tensor"},
      {"hole", file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", f32x2),
       "belong to no tensor"},
      {"trailing", file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", f32x2),
       "trailing bytes that belong to no tensor"},
      {"duplicate",
       file_with(
           R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
           f32x2),
       "appears twice"},
      {"metadata_type", file_with(R"({"__metadata__":{"format":1}})", ""),
       "__metadata__.format must be a string"},
      {"no_offsets", file_with(R"({"w":{"dtype":"F32","shape":[2]}})", f32x2),
       "data_offsets must be [begin, end]"},
      {"extra_field", file_with(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", f32x2),
       "unexpected field \"x\""},
      {"shape_overflow",
       file_with(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", f32x2),
       "shape overflows"},
  };
}

TEST(Safetensors, EveryMalformedFileGetsItsSpecificError) {
  test::TempDir d;
  for (const auto& m : corpus()) {
    std::string path = d.file(std::string(m.name) + ".safetensors");
    test::write(path, m.bytes);
    try {
      SafetensorsFile::open(path);
      ADD_FAILURE() << m.name << ": accepted";
    } catch (const CheckpointError& e) {
      std::string w = e.what();
      EXPECT_EQ(w.rfind(path + ": invalid safetensors file: ", 0), 0u) << w;
      EXPECT_NE(w.find(m.error), std::string::npos) << m.name << ": " << w;
    }
  }
}

TEST(Safetensors, RoundTripKeepsBytesAndIsZeroCopy) {
  test::TempDir d;
  at::Tensor a = at::randn({3, 5});
  at::Tensor b = at::randn({7}).to(at::kBFloat16);
  at::Tensor c = at::arange(6, at::kLong).view({2, 3});
  write_safetensors(d.file("t.safetensors"), {{"a", a}, {"b", b}, {"c", c}});
  auto f = SafetensorsFile::open(d.file("t.safetensors"));
  EXPECT_EQ(f->header().metadata.at("format"), "pt");
  EXPECT_EQ(f->header().data_offset % 8, 0u);
  EXPECT_TRUE(at::equal(f->tensor("a"), a));
  EXPECT_TRUE(at::equal(f->tensor("b"), b));
  EXPECT_TRUE(at::equal(f->tensor("c"), c));
  // The view points into the mapping and keeps it alive after the file object is gone.
  at::Tensor view = f->tensor("a");
  f.reset();
  EXPECT_TRUE(at::equal(view, a));
}

TEST(Safetensors, HeaderParserSurvivesBoundedFuzzing) {
  const char* cxx = std::getenv("SFT_FUZZ_CXX") ? std::getenv("SFT_FUZZ_CXX") : "clang++";
  auto probe = test::run_program({cxx, "--version"}, {}, 30);
  if (probe.exit_code != 0) GTEST_SKIP() << "clang++ not found (apt install clang libclang-rt-14-dev)";
  test::TempDir d;
  const std::string src = test::source_dir();
  auto build = test::run_program(
      {cxx, "-std=c++17", "-g", "-O1", "-fsanitize=fuzzer,address,undefined",
       "-fno-sanitize-recover=undefined", "-I" + src + "/include", src + "/tests/fuzz/safetensors_fuzz.cpp",
       src + "/src/model/safetensors_header.cpp", src + "/src/util/error.cpp", "-o", d.file("fuzz")},
      {}, 600);
  if (build.exit_code != 0 && build.err.find("libclang_rt.fuzzer") != std::string::npos)
    GTEST_SKIP() << "libFuzzer runtime missing (apt install libclang-rt-14-dev)";
  ASSERT_EQ(build.exit_code, 0) << build.err;
  // Seeds: a valid file and the malformed corpus.
  fs::make_dirs(d.file("corpus"));
  write_safetensors(d.file("corpus/valid.safetensors"),
                    {{"w", at::randn({2, 3})}, {"b", at::ones({4}, at::kBFloat16)}});
  for (const auto& m : corpus()) test::write(d.file(std::string("corpus/") + m.name), m.bytes);
  auto run = test::run_program({d.file("fuzz"), "-max_total_time=20", "-seed=1", "-timeout=5",
                                "-rss_limit_mb=2048", "-artifact_prefix=" + d.path() + "/", d.file("corpus")},
                               {}, 120, d.path());
  EXPECT_EQ(run.exit_code, 0) << run.err.substr(run.err.size() > 4000 ? run.err.size() - 4000 : 0);
  EXPECT_NE(run.err.find("Done "), std::string::npos) << "libFuzzer did not finish its runs";
}

}  // namespace
}  // namespace sft::model

namespace sft::model {
namespace {

// A tensor that must be converted on its way to the file goes through the staging buffer a
// piece at a time: the extra host memory stays within the bound (here 1 MiB for a 64 MiB
// tensor), the file holds the converted values, and the digest taken while writing is the
// file's.
TEST(SafetensorsStream, ConvertedTensorsPassThroughABoundedStagingBuffer) {
  train::CpuMemoryTracker::install();
  test::TempDir d;
  const std::string path = d.file("x.safetensors");
  at::Tensor big = at::randn({16 << 20}, at::kFloat);  // 64 MiB
  at::Tensor small = at::arange(10, at::kFloat);
  const std::size_t staging = std::size_t(1) << 20;
  const std::int64_t before = train::CpuMemoryTracker::current_bytes();
  train::CpuMemoryTracker::reset_peak();
  SafetensorsStreamWriter w(path, {{"big", at::kBFloat16, big.sizes().vec()}, {"small", at::kFloat, {10}}},
                            {{"format", "pt"}}, staging);
  w.write(big);
  w.write(small);
  w.commit();
  const std::int64_t extra = train::CpuMemoryTracker::peak_bytes() - before;
  EXPECT_LE(extra, static_cast<std::int64_t>(1.1 * staging))
      << "held " << extra << " bytes beyond the tensors";
  EXPECT_EQ(w.sha256(), sha256_file(path));
  EXPECT_EQ(w.bytes(), fs::file_size(path));
  auto f = SafetensorsFile::open(path);
  EXPECT_TRUE(at::equal(f->tensor("big"), big.to(at::kBFloat16)));
  EXPECT_TRUE(at::equal(f->tensor("small"), small));
}

}  // namespace
}  // namespace sft::model
