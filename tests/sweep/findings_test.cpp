// The paper's findings, decided over run folders laid out as `sft train` leaves them
// (config.resolved.json, data_manifest.json, eval/summary.json) with scores chosen so each
// claim's answer is known: the effects, their intervals over seeds, and the verdicts.
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sft/sweep/findings.h"
#include "sft/sweep/report.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft::sweep {
namespace {

using nlohmann::json;
constexpr double kFull[] = {6144, 4096, 2048};  // math, code, general records at full data
const char* const kAbilities[] = {"math", "code", "general"};

class Lab {
 public:
  // One finished run: its stages (ability -> records, per stage), strategy, k, seed, scores.
  void run(const std::vector<std::map<std::string, double>>& stages, const std::string& strategy, double k,
           int seed, const std::map<std::string, double>& scores) {
    SweepRun r;
    r.name = "run" + std::to_string(runs_.size());
    r.dir = dir_.file(r.name);
    json datasets = json::object(), man = {{"seed", seed}, {"stages", json::array()}};
    for (const auto& st : stages) {
      json sources = json::array();
      for (const auto& [ability, n] : st) {
        datasets[ability] = {{"ability", ability}};
        json ids = json::array();
        for (int i = 0; i < static_cast<int>(n); ++i) ids.push_back(std::to_string(i));
        sources.push_back({{"dataset", ability}, {"records", ids}});
      }
      man["stages"].push_back({{"sources", sources}});
    }
    json summary = json::object();
    for (const auto& [ability, s] : scores) summary[ability] = {{"score", s}};
    fs::make_dirs(r.dir + "/eval");
    test::write(r.dir + "/config.resolved.json",
                json{{"config",
                      {{"seed", seed}, {"strategy", {{"name", strategy}, {"k", k}}}, {"datasets", datasets}}}}
                    .dump());
    test::write(r.dir + "/data_manifest.json", man.dump());
    test::write(r.dir + "/eval/summary.json", summary.dump());
    runs_.push_back(r);
  }
  json findings() { return build_findings(runs_, dir_.file("out")); }
  std::string md() { return test::read(dir_.file("out/findings.md")); }

 private:
  test::TempDir dir_;
  std::vector<SweepRun> runs_;
};

std::map<std::string, double> all(double share) {
  return {{"math", kFull[0] * share}, {"code", kFull[1] * share}, {"general", kFull[2] * share}};
}

const json& claim(const json& f, const std::string& id) {
  for (const auto& c : f["claims"])
    if (c["id"] == id) return c;
  throw std::runtime_error("no claim " + id);
}

const json& row(const json& c, const std::string& ability) {
  for (const auto& r : c["rows"])
    if (r["ability"] == ability) return r;
  throw std::runtime_error("no row " + ability);
}

// A miniature world where every claim holds: alone curves log-linear for math and code and
// flat from 1/16 for general, mixing +3 points at 1/256 and -4 at full data, sequential 20
// points below alone on math and code, DMT about 1 point below multi-task on them and 6
// above sequential on general. Seeds add a small, known wobble.
void fill_paper_world(Lab& lab) {
  const double shares[] = {1.0 / 256, 1.0 / 64, 1.0 / 16, 1.0 / 4, 1};
  for (int seed = 1; seed <= 3; ++seed) {
    const double w = 0.002 * (seed - 2);
    for (double s : shares) {
      const double math = 0.6 + 0.05 * std::log2(s) + w, code = 0.5 + 0.04 * std::log2(s) + w;
      const double general = s >= 1.0 / 16 ? 0.5 + w : 0.3 + w;
      lab.run({{{"math", kFull[0] * s}}}, "multi_task", 0, seed, {{"math", math}});
      lab.run({{{"code", kFull[1] * s}}}, "multi_task", 0, seed, {{"code", code}});
      lab.run({{{"general", kFull[2] * s}}}, "multi_task", 0, seed, {{"general", general}});
      const double mix = s == 1 ? -0.04 : s <= 1.0 / 256 ? 0.03 : 0.0;
      lab.run({all(s)}, "multi_task", 0, seed,
              {{"math", math + mix}, {"code", code + mix}, {"general", general + mix}});
    }
    lab.run({{{"code", kFull[1]}}, {{"math", kFull[0]}}, {{"general", kFull[2]}}}, "sequential", 0, seed,
            {{"math", 0.4 + w}, {"code", 0.3 - w}, {"general", 0.5 + w}});
    lab.run({{{"math", kFull[0]}, {"code", kFull[1]}}, {{"general", kFull[2]}, {"math", 24}, {"code", 16}}},
            "dmt", 1.0 / 256, seed, {{"math", 0.55 + w}, {"code", 0.45}, {"general", 0.56}});
  }
}

TEST(Findings, EachClaimIsDecidedWithItsIntervalOverSeeds) {
  Lab lab;
  fill_paper_world(lab);
  const json f = lab.findings();
  EXPECT_EQ(f["finished_runs"],
            3 * (5 * 4 + 2));  // per seed: 5 shares x (3 alone + 1 mixed), sequential, dmt

  const json& forgets = claim(f, "sequential_forgets");
  EXPECT_EQ(forgets["verdict"], "reproduced");
  EXPECT_EQ(forgets["rows"].size(), 2u);  // code and math come before the last stage
  EXPECT_NEAR(row(forgets, "math")["effect"].get<double>(), -20.0, 1e-9);
  EXPECT_EQ(row(forgets, "math")["seeds"], 3);
  // code: 0.3 - w against 0.5 + w: -20 - 0.4 (seed - 2) points; the interval is t(2) around -20.
  const json& code = row(forgets, "code");
  EXPECT_NEAR(code["effect"].get<double>(), -20.0, 1e-9);
  EXPECT_NEAR(code["ci95"][1].get<double>() + 20.0, 4.3027 * 0.4 / std::sqrt(3.0), 1e-6);

  const json& keeps = claim(f, "dmt_keeps_both");
  EXPECT_NEAR(row(keeps, "math")["effect"].get<double>(), -1.0,
              1e-9);                                       // 0.55 against 0.6 - 0.04 (mixing's loss)
  EXPECT_EQ(row(keeps, "math")["verdict"], "reproduced");  // within the 5-point margin
  EXPECT_EQ(row(keeps, "general")["verdict"], "reproduced");

  EXPECT_EQ(claim(f, "multi_task_hurts_general")["verdict"], "reproduced");

  const json& scaling = claim(f, "scaling");
  EXPECT_EQ(row(scaling, "math")["verdict"], "reproduced");
  EXPECT_NEAR(row(scaling, "math")["effect"].get<double>(), 5.0, 0.05);  // points per doubling
  EXPECT_GT(row(scaling, "math")["r2"].get<double>(), 0.99);
  const json& gen = row(scaling, "general");
  EXPECT_NEAR(gen["share"]["mean"].get<double>(), 1.0 / 16, 1e-9);
  EXPECT_EQ(gen["verdict"], "reproduced");  // math and code need all their data

  const json& mixing = claim(f, "mixing_low_high");
  EXPECT_EQ(mixing["verdict"], "reproduced");
  EXPECT_NEAR(row(mixing, "math")["effect"].get<double>(), 3.0, 1e-9);
  EXPECT_NEAR(row(mixing, "math")["at_full"]["effect"].get<double>(), -4.0, 1e-9);
  EXPECT_EQ(f["mixing_by_share"].size(), 15u);

  const std::string md = lab.md();
  EXPECT_NE(md.find("| sequential training forgets the earlier abilities | code |"), std::string::npos) << md;
  EXPECT_NE(md.find("47.27"), std::string::npos) << md;  // the paper's figure beside the miniature's
}

// Where the seeds disagree the interval straddles zero: undecided. Where the effect is
// decided the other way: not reproduced. With one seed nothing is decided.
TEST(Findings, StraddlingIntervalsAreUndecidedAndContraryOnesNotReproduced) {
  Lab lab;
  const double wobble[] = {0.10, -0.12, 0.05};
  for (int seed = 1; seed <= 3; ++seed) {
    lab.run({{{"math", kFull[0]}}}, "multi_task", 0, seed, {{"math", 0.5}});
    lab.run({{{"code", kFull[1]}}}, "multi_task", 0, seed, {{"code", 0.5}});
    lab.run({{{"general", kFull[2]}}}, "multi_task", 0, seed, {{"general", 0.4}});
    lab.run({all(1)}, "multi_task", 0, seed,
            {{"math", 0.5}, {"code", 0.5}, {"general", 0.6}});  // general up: contrary
    lab.run({{{"code", kFull[1]}}, {{"math", kFull[0]}}, {{"general", kFull[2]}}}, "sequential", 0, seed,
            {{"math", 0.5 + wobble[seed - 1]}, {"code", 0.6}, {"general", 0.4}});
    lab.run({{{"math", kFull[0]}, {"code", kFull[1]}}, {{"general", kFull[2]}}}, "dmt", 1.0 / 256, seed,
            {{"math", 0.5}, {"code", 0.5}, {"general", 0.4}});
  }
  const json f = lab.findings();
  const json& forgets = claim(f, "sequential_forgets");
  EXPECT_EQ(row(forgets, "math")["verdict"], "undecided");
  EXPECT_LT(row(forgets, "math")["ci95"][0].get<double>(), 0.0);
  EXPECT_GT(row(forgets, "math")["ci95"][1].get<double>(), 0.0);
  EXPECT_EQ(row(forgets, "code")["verdict"], "not reproduced");  // sequential scores higher
  EXPECT_EQ(forgets["verdict"], "mixed (see each row)");
  EXPECT_EQ(claim(f, "multi_task_hurts_general")["verdict"], "not reproduced");
  // No RQ1 curves and no RQ2 mixes here: those claims list no rows.
  EXPECT_EQ(claim(f, "mixing_low_high")["verdict"], "no runs");

  Lab one;
  one.run({{{"math", kFull[0]}}}, "multi_task", 0, 1, {{"math", 0.5}});
  one.run({{{"code", kFull[1]}}, {{"math", kFull[0]}}, {{"general", kFull[2]}}}, "sequential", 0, 1,
          {{"math", 0.1}, {"code", 0.1}, {"general", 0.1}});
  EXPECT_EQ(row(claim(one.findings(), "sequential_forgets"), "math")["verdict"], "undecided");
}

// The slope's interval: an exact law has a zero-width one; noise widens it around the slope.
TEST(SweepFit, TheSlopeIntervalUsesTWithNMinusTwoDegrees) {
  std::vector<double> x = {24, 96, 384, 1536, 6144}, exact, noisy;
  const double wobble[] = {0.01, -0.02, 0.015, -0.005, 0.0};
  for (std::size_t i = 0; i < x.size(); ++i) {
    exact.push_back(0.1 + 0.05 * std::log(x[i]));
    noisy.push_back(exact.back() + wobble[i]);
  }
  const LogFit e = fit_log(x, exact);
  EXPECT_NEAR(e.b_lo, 0.05, 1e-9);
  EXPECT_NEAR(e.b_hi, 0.05, 1e-9);
  const LogFit n = fit_log(x, noisy);
  EXPECT_LT(n.b_lo, n.b);
  EXPECT_GT(n.b_hi, n.b);
  EXPECT_NEAR(n.b - n.b_lo, n.b_hi - n.b, 1e-12);
  EXPECT_TRUE(std::isnan(fit_log({1, 2}, {0.1, 0.2}).b_lo));
}

}  // namespace
}  // namespace sft::sweep
