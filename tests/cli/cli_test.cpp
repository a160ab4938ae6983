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
  // LibTorch 2.x, and CUDA compiled in exactly when this build has it (SFT_CUDA).
  EXPECT_EQ(v["libtorch"].get<std::string>().rfind("2.", 0), 0u) << v.dump();
  EXPECT_EQ(v["cuda_compiled"].get<bool>(), SFT_WITH_CUDA != 0) << v.dump();
  EXPECT_EQ(v["gloo_compiled"].get<bool>(), SFT_TEST_GLOO != 0) << v.dump();
  EXPECT_NE(r.out.find(SFT_TEST_GLOO ? "gloo compiled in" : "gloo not compiled in (SFT_GLOO=OFF)"),
            std::string::npos)
      << r.out;
  // CUDA compiled in but no GPU: both forms say why (here: no driver, or one too old for the runtime).
  if (SFT_WITH_CUDA && !v["cuda_available"].get<bool>()) {
    ASSERT_TRUE(v.contains("cuda_unavailable")) << v.dump();
    EXPECT_FALSE(v["cuda_unavailable"].get<std::string>().empty());
    EXPECT_NE(r.out.find("no device available: " + v["cuda_unavailable"].get<std::string>()),
              std::string::npos)
        << r.out;
  }
  if (SFT_WITH_CUDA) {
    EXPECT_EQ(v["cuda_version"].get<std::string>().rfind("13.", 0), 0u) << v.dump();
    EXPECT_NE(r.out.find("compiled in (CUDA 13."), std::string::npos) << r.out;
  }
}

TEST(Cli, UsageErrorsExitWithTwo) {
  EXPECT_EQ(test::run_sft({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(test::run_sft({"train", "--no-such-flag"}).exit_code, 2);
  EXPECT_EQ(test::run_sft({"train"}).exit_code, 2);
  EXPECT_EQ(test::run_sft({}).exit_code, 2);
  auto help = test::run_sft({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* sub : {"train", "config", "version"})
    EXPECT_NE(help.out.find(sub), std::string::npos) << sub;
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
  auto r =
      test::run_sft({"config", "expand", "--config", "configs/tiny/dmt.yaml", "--set", "strategy.k=1/64"});
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

namespace sft {
namespace {

TEST(CliData, InspectShowsTextIdsMaskAndOrigin) {
  test::TempDir d;
  auto r = test::run_sft({"data", "inspect", "--config", "configs/tiny/dmt.yaml", "--stage", "general",
                          "--index", "5", "--json", "--set", "data.cache_dir=" + d.path()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["stage"], "general");
  const std::string text = j["text"];
  EXPECT_EQ(text.rfind("<s>A chat between", 0), 0u) << text;
  EXPECT_NE(text.find("</s>"), std::string::npos);
  ASSERT_EQ(j["ids"].size(), j["mask"].size());
  EXPECT_EQ(j["ids"][0], 1);
  EXPECT_EQ(j["mask"][0], 0);
  EXPECT_EQ(j["ids"].back(), 2);  // ends with the trained EOS
  EXPECT_EQ(j["mask"].back(), 1);
  EXPECT_EQ(j["origin"]["file"], "data/tiny/general_train.json");
  EXPECT_GT(j["origin"]["line"].get<long>(), 1);
  // The same sample by its record id.
  auto by_id = test::run_sft({"data", "inspect", "--config", "configs/tiny/dmt.yaml", "--stage", "2", "--id",
                              j["origin"]["id"], "--json", "--set", "data.cache_dir=" + d.path()});
  ASSERT_EQ(by_id.exit_code, 0) << by_id.err;
  EXPECT_EQ(nlohmann::json::parse(by_id.out)["ids"], j["ids"]);
  // Human-readable form marks trained tokens.
  auto human = test::run_sft({"data", "inspect", "--config", "configs/tiny/dmt.yaml", "--stage", "general",
                              "--index", "5", "--set", "data.cache_dir=" + d.path()});
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("\u27e6"), std::string::npos);
  EXPECT_NE(human.out.find(" T"), std::string::npos);
}

TEST(CliData, PrepareBuildsTheCacheOnceThenReusesIt) {
  test::TempDir d;
  std::vector<std::string> args = {"data",
                                   "prepare",
                                   "--json",
                                   "--config",
                                   "configs/tiny/dmt.yaml",
                                   "--set",
                                   "data.cache_dir=" + d.path()};
  auto first = test::run_sft(args);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  auto second = test::run_sft(args);
  ASSERT_EQ(second.exit_code, 0) << second.err;
  auto a = nlohmann::json::parse(first.out), b = nlohmann::json::parse(second.out);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(a["datasets"][i]["rebuilt"].get<bool>());
    EXPECT_FALSE(b["datasets"][i]["rebuilt"].get<bool>());
    EXPECT_EQ(a["datasets"][i]["tokens"], b["datasets"][i]["tokens"]);
  }
}

TEST(CliData, StatsOnTinyDataCountEveryRecord) {
  test::TempDir d;
  auto r = test::run_sft({"data", "stats", "--json", "--config", "configs/tiny/dmt.yaml", "--set",
                          "data.cache_dir=" + d.path()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["datasets"]["math"]["read"], 6144);
  EXPECT_EQ(j["datasets"]["code"]["read"], 4096);
  EXPECT_EQ(j["datasets"]["general"]["read"], 2048);
  EXPECT_EQ(j["stages"][1]["sources"][1]["records"], 24);  // 6144 / 256 replayed
  EXPECT_GT(j["stages"][0]["target_tokens"].get<long>(), 0);
}

TEST(CliData, RenderErrorsNameTheFileAndExitNonZero) {
  auto r = test::run_sft(
      {"data", "render", "--format", "gsm8k", "tests/fixtures/bad_data/gsm8k_missing_answer.jsonl"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("gsm8k_missing_answer.jsonl:3: missing field \"answer\""), std::string::npos) << r.err;
}

}  // namespace
}  // namespace sft
