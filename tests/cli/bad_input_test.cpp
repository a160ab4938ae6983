// The bad-input corpus (tests/fixtures/bad_inputs/): hostile flags, config values and input
// files, each refused with exit code 2 and a message naming the flag, key or file:line and
// what is wrong, leaving the disk as it was. Plus the faults that need a run of their own: a
// crash's checkpoint temporaries, and a run whose every step is skipped.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "sft/eval/sandbox.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft {
namespace {

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

// Every file under `dir` with its bytes: what a refused input must leave unchanged.
std::map<std::string, std::string> snapshot(const std::string& dir, const std::string& rel = "") {
  std::map<std::string, std::string> out;
  for (const auto& name : fs::list_dir(fs::join(dir, rel))) {
    const std::string r = rel.empty() ? name : rel + "/" + name;
    const std::string path = fs::join(dir, r);
    if (fs::is_dir(path)) {
      out[r + "/"] = "";
      for (auto& [k, v] : snapshot(dir, r)) out[k] = v;
    } else {
      out[r] = test::read(path);
    }
  }
  return out;
}

TEST(BadInput, EveryCaseExitsTwoNamingTheProblemAndChangesNothing) {
  std::ifstream in(test::source_dir() + "/tests/fixtures/bad_inputs/cli.jsonl");
  ASSERT_TRUE(in.good());
  std::string why;
  const bool sandbox = eval::sandbox_available(&why);
  int ran = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const auto c = nlohmann::json::parse(line);
    const std::string name = c["name"];
    if (c.value("needs", std::string()) == "sandbox" && !sandbox) {
      std::cerr << "skipped (sandbox unavailable: " << why << "): " << name << "\n";
      continue;
    }
    test::TempDir d;
    for (auto it = c["files"].begin(); it != c["files"].end(); ++it) {
      // "a/b.txt" makes a/ first; "x.gz" is written gzip-compressed from the text given.
      const std::string path = d.file(it.key());
      fs::make_dirs(path.substr(0, path.rfind('/')));
      const bool gz = path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0;
      test::write(gz ? path.substr(0, path.size() - 3) : path, it.value());
      if (gz)
        ASSERT_EQ(test::run_program({"gzip", "-n", "-f", path.substr(0, path.size() - 3)}).exit_code, 0)
            << name;
    }
    std::vector<std::string> args;
    for (const auto& a : c["args"]) args.push_back(replace_all(a.get<std::string>(), "{tmp}", d.path()));
    const auto before = snapshot(d.path());
    std::map<std::string, std::string> env;
    const nlohmann::json env_json = c.value("env", nlohmann::json::object());
    for (auto it = env_json.begin(); it != env_json.end(); ++it)
      env[it.key()] = it.value().get<std::string>();
    auto r = test::run_sft(args, env, 120);
    ++ran;
    EXPECT_EQ(r.exit_code, c["exit"].get<int>()) << name << ":\n" << r.err;
    for (const auto& e : c["expect"]) {
      const std::string want = replace_all(e.get<std::string>(), "{tmp}", d.path());
      EXPECT_NE(r.err.find(want), std::string::npos) << name << ": the message lacks \"" << want << "\":\n"
                                                     << r.err;
    }
    for (const auto& a : c.value("absent", nlohmann::json::array()))
      EXPECT_EQ(r.err.find(a.get<std::string>()), std::string::npos)
          << name << ": the message holds \"" << a << "\":\n"
          << r.err;
    EXPECT_LT(r.err.size(), 2000u) << name << ": a message, not a dump";
    EXPECT_EQ(snapshot(d.path()), before) << name << ": the disk changed";
  }
  EXPECT_GE(ran, 30);
}

// A crash mid-save leaves step_N.tmp.PID behind: never a valid checkpoint. The next run in
// that folder removes it (and says so) before anything else.
TEST(BadInput, ACrashsCheckpointTemporariesAreRemovedAtStart) {
  test::TempDir d;
  const std::string stale = d.file("run/checkpoints/step_4.tmp.12345");
  fs::make_dirs(stale);
  test::write(stale + "/state.safetensors", "half written");
  fs::make_dirs(d.file("run/checkpoints/step_8.tmp.sharded"));
  auto args =
      test::train_args(d.file("run"), d.file("cache"),
                       {"train.max_steps=1", "datasets.math.fraction=1/16", "datasets.code.fraction=1/16",
                        "datasets.general.fraction=1/16", "train.export_stage_models=false"});
  args.insert(args.end(), {"--resume", "auto"});
  auto r = test::run_sft(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_FALSE(fs::exists(d.file("run/checkpoints/step_8.tmp.sharded")));
  EXPECT_NE(r.err.find("step_4.tmp.12345"), std::string::npos) << r.err;
}

// A run whose every step had a non-finite loss learned nothing: it fails, and exports nothing.
TEST(BadInput, ARunWhoseEveryStepWasSkippedFailsAndExportsNothing) {
  test::TempDir d;
  auto args = test::train_args(
      d.file("run"), d.file("cache"),
      {"train.max_steps=3", "train.max_nonfinite_steps=10", "datasets.math.fraction=1/16",
       "datasets.code.fraction=1/16", "datasets.general.fraction=1/16", "train.export_stage_models=false"});
  args.insert(args.end(), {"--inject-nonfinite", "1,2,3"});
  auto r = test::run_sft(args);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("all 3 steps had a non-finite loss"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(d.file("run/final")));
}

}  // namespace
}  // namespace sft
