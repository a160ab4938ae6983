// The command line seen from outside: exit codes and machine-readable output.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace sft {
namespace {

TEST(Cli, VersionPrintsLibTorchCudaAndThreads) {
  auto r = test::run_sft({"version"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("sft "), std::string::npos);
  EXPECT_NE(r.out.find("libtorch "), std::string::npos);
  EXPECT_NE(r.out.find("cuda "), std::string::npos);
  EXPECT_NE(r.out.find("threads "), std::string::npos);
  auto j = test::run_sft({"version", "--json"});
  auto v = nlohmann::json::parse(j.out);
  EXPECT_TRUE(v.contains("cuda_available"));
  EXPECT_GE(v["threads"].get<int>(), 1);
}

TEST(Cli, UsageErrorsExitWithTwo) {
  EXPECT_EQ(test::run_sft({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(test::run_sft({"train", "--no-such-flag"}).exit_code, 2);
  EXPECT_EQ(test::run_sft({"train"}).exit_code, 2);
  EXPECT_EQ(test::run_sft({}).exit_code, 2);
  auto help = test::run_sft({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* sub : {"train", "config", "version"}) EXPECT_NE(help.out.find(sub), std::string::npos) << sub;
}

TEST(Cli, ConfigErrorsExitWithTwoAndListEveryProblem) {
  auto r = test::run_sft({"config", "expand", "--config", "tests/fixtures/configs/five_mistakes.yaml"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("5 problems"), std::string::npos) << r.err;
  auto missing = test::run_sft({"config", "expand", "--config", "no/such/file.yaml"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("no/such/file.yaml"), std::string::npos);
}

TEST(Cli, ConfigExpandPrintsThePapersStageStructure) {
  auto r = test::run_sft({"config", "expand", "--config", "configs/tiny/dmt.yaml", "--set", "strategy.k=1/64"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["stages"].size(), 2u);
  EXPECT_EQ(j["stages"][0]["name"], "specialised");
  EXPECT_EQ(j["stages"][1]["name"], "general");
  auto& src = j["stages"][1]["sources"];
  ASSERT_EQ(src.size(), 3u);
  EXPECT_EQ(src[1]["dataset"], "math");
  EXPECT_EQ(src[1]["samples"], 96);  // 6144 / 64
  EXPECT_DOUBLE_EQ(src[1]["fraction"].get<double>(), 1.0 / 64);
  EXPECT_EQ(src[2]["samples"], 64);  // 4096 / 64
  EXPECT_DOUBLE_EQ(j["stages"][0]["lr"].get<double>(), 2e-3);
  EXPECT_EQ(j["stages"][0]["epochs"], 1);
}

}  // namespace
}  // namespace sft
