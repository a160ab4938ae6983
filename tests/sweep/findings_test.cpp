// The paper's findings, decided over run folders laid out as `sft train` leaves them
// (config.resolved.json, data_manifest.json, eval/summary.json) with scores chosen so each
// claim's answer is known: the effects, their intervals over seeds, and the verdicts, by the
// shipped analysis plan (configs/repro/analysis_plan.yaml) recorded as scripts/repro.sh
// records it; and the plan's hash check (a report under another plan decides nothing).
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sft/sweep/findings.h"
#include "sft/sweep/report.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"
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
    if (scores.count("general")) {  // the shipped plan decides general by open_turn_likelihood
      summary["general"]["open_turn_accuracy"] = scores.at("general");
      summary["general"]["open_turn_likelihood"] = scores.at("general");
    }
    fs::make_dirs(r.dir + "/eval");
    test::write(r.dir + "/config.resolved.json",
                json{{"config",
                      {{"seed", seed}, {"strategy", {{"name", strategy}, {"k", k}}}, {"datasets", datasets}}}}
                    .dump());
    test::write(r.dir + "/data_manifest.json", man.dump());
    test::write(r.dir + "/eval/summary.json", summary.dump());
    runs_.push_back(r);
  }
  // What scripts/repro.sh does before the first run: the plan copied into the study folder,
  // its SHA-256 and the number of runs already finished recorded beside it.
  void record(const std::string& plan_text, const std::string& sha256, int finished_before = 0) {
    fs::make_dirs(dir_.file("out"));
    test::write(dir_.file("out/analysis_plan.yaml"), plan_text);
    test::write(dir_.file("out/" + std::string(kPlanRecord)), json{{"plan_file", "analysis_plan.yaml"},
                                                                   {"sha256", sha256},
                                                                   {"recorded_utc", "2026-12-06T14:00Z"},
                                                                   {"finished_runs_before", finished_before}}
                                                                  .dump());
  }
  void record_shipped_plan() {
    const std::string text = test::read(shipped_plan());
    record(text, sha256_hex(text));
  }
  static std::string shipped_plan() { return test::source_dir() + "/configs/repro/analysis_plan.yaml"; }
  json findings(const std::string& plan = "", const std::string& compare = "") {
    return build_findings(runs_, dir_.file("out"), {dir_.file("out"), plan, compare});
  }
  std::string md() { return test::read(dir_.file("out/findings.md")); }
  std::string out_dir() { return dir_.file("out"); }
  std::string file(const std::string& name) { return dir_.file(name); }

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

const json& row_id(const json& c, const std::string& id) {
  for (const auto& r : c["rows"])
    if (r["id"] == id) return r;
  throw std::runtime_error("no row " + id);
}

TEST(Findings, EachClaimIsDecidedByTheRecordedPlanWithItsIntervalAndN) {
  Lab lab;
  fill_paper_world(lab);
  lab.record_shipped_plan();
  const json f = lab.findings();
  EXPECT_EQ(f["finished_runs"],
            3 * (5 * 4 + 2));  // per seed: 5 shares x (3 alone + 1 mixed), sequential, dmt
  EXPECT_EQ(f["plan"]["status"], "confirmatory");
  EXPECT_EQ(f["plan"]["sha256"], sha256_file(Lab::shipped_plan()));

  const json& forgets = claim(f, "sequential_forgets");
  EXPECT_EQ(forgets["verdict"], "reproduced");
  EXPECT_EQ(forgets["analysis"], "confirmatory");
  ASSERT_EQ(forgets["rows"].size(), 2u);
  // At full data a seed is no data subset: Welch over all runs, n on each side reported.
  const json& math = row(forgets, "math");
  EXPECT_EQ(math["method"], "welch");
  EXPECT_EQ(math["n"]["a"], 3);
  EXPECT_EQ(math["n"]["b"], 3);
  EXPECT_NEAR(math["effect"].get<double>(), -20.0, 1e-9);
  // code: 0.3 - w against 0.5 + w, sd 0.2 points each side: Welch df 4, half-width t(4) sqrt(2 (0.04)/3).
  const json& code = row(forgets, "code");
  EXPECT_NEAR(code["effect"].get<double>(), -20.0, 1e-9);
  EXPECT_NEAR(code["df"].get<double>(), 4.0, 1e-9);
  EXPECT_NEAR(code["ci95"][1].get<double>() + 20.0, 2.7764451 * std::sqrt(2 * 0.04 / 3), 1e-6);

  EXPECT_EQ(claim(f, "dmt_relieves_forgetting")["verdict"], "reproduced");
  EXPECT_NEAR(row(claim(f, "dmt_relieves_forgetting"), "math")["effect"].get<double>(), 15.0, 1e-9);
  const json& keeps = claim(f, "dmt_keeps_both");
  EXPECT_NEAR(row(keeps, "math")["effect"].get<double>(), -1.0, 1e-9);  // 0.55 against 0.6 - 0.04
  EXPECT_EQ(row(keeps, "math")["verdict"], "reproduced");               // within the 5-point margin
  EXPECT_EQ(keeps["verdict"], "reproduced");
  EXPECT_EQ(claim(f, "multi_task_hurts_general")["verdict"], "reproduced");

  const json& loglin = claim(f, "specialised_log_linear");
  EXPECT_EQ(loglin["verdict"], "reproduced");
  const json& lm = row(loglin, "math");
  EXPECT_NEAR(lm["effect"].get<double>(), 5.0, 1e-6);  // points per doubling
  EXPECT_EQ(lm["n"]["runs"], 15);
  EXPECT_EQ(lm["n"]["shares"], 5);
  EXPECT_GT(lm["lack_of_fit"]["p"].get<double>(), 0.05);
  EXPECT_LE(lm["logistic"]["delta_aic"].get<double>(), 2.0);

  // General at 1/64: 0.3 / 0.5 = 0.6 of its full score; math 0.3 / 0.6 = 0.5, code 0.26 / 0.5.
  const json& sat = claim(f, "general_saturates_early");
  EXPECT_NEAR(row_id(sat, "sat_general_math")["effect"].get<double>(), 0.1, 1e-3);
  EXPECT_NEAR(row_id(sat, "sat_general_code")["effect"].get<double>(), 0.08, 1e-3);
  EXPECT_EQ(sat["verdict"], "reproduced");

  // Mixing at the smallest share both ran (1/256: paired, the same subset per seed) and at full data.
  const json& mixing = claim(f, "mixing_low_high");
  EXPECT_EQ(mixing["verdict"], "reproduced");
  const json& low = row_id(mixing, "mix_low_math");
  EXPECT_EQ(low["method"], "paired t");
  EXPECT_NEAR(low["share"].get<double>(), 1.0 / 256, 1e-12);
  EXPECT_NEAR(low["effect"].get<double>(), 3.0, 1e-9);
  EXPECT_NEAR(row_id(mixing, "mix_high_math")["effect"].get<double>(), -4.0, 1e-9);
  EXPECT_EQ(row_id(mixing, "mix_high_math")["method"], "welch");
  EXPECT_EQ(f["mixing_by_share"].size(), 15u);

  const std::string md = lab.md();
  EXPECT_NE(md.find("Confirmatory verdicts from the analysis plan recorded"), std::string::npos) << md;
  EXPECT_NE(md.find("47.27 (Table 1, arXiv v4, not verified)"), std::string::npos) << md;
}

// Where the seeds disagree the interval straddles the threshold: undecided. Where the effect is
// decided the other way: not reproduced, and so is the claim. With one seed nothing is decided.
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
  lab.record_shipped_plan();
  const json f = lab.findings();
  const json& forgets = claim(f, "sequential_forgets");
  EXPECT_EQ(row(forgets, "math")["verdict"], "undecided");
  EXPECT_LT(row(forgets, "math")["ci95"][0].get<double>(), 0.0);
  EXPECT_GT(row(forgets, "math")["ci95"][1].get<double>(), 0.0);
  EXPECT_EQ(row(forgets, "code")["verdict"], "not reproduced");  // sequential scores higher
  EXPECT_EQ(forgets["verdict"], "not reproduced");               // the whole claim, not a half
  EXPECT_EQ(claim(f, "multi_task_hurts_general")["verdict"], "not reproduced");
  // One share only: no curve to test, nothing to decide.
  EXPECT_EQ(claim(f, "specialised_log_linear")["verdict"], "undecided");

  Lab one;
  one.run({{{"math", kFull[0]}}}, "multi_task", 0, 1, {{"math", 0.5}});
  one.run({{{"code", kFull[1]}}, {{"math", kFull[0]}}, {{"general", kFull[2]}}}, "sequential", 0, 1,
          {{"math", 0.1}, {"code", 0.1}, {"general", 0.1}});
  one.record_shipped_plan();
  EXPECT_EQ(row(claim(one.findings(), "sequential_forgets"), "math")["verdict"], "undecided");
}

bool all_exploratory(const json& f) {
  for (const auto& c : f["claims"]) {
    if (c["analysis"] != "exploratory") return false;
    for (const auto& r : c["rows"])
      if (r["analysis"] != "exploratory") return false;
  }
  return !f["claims"].empty();
}

// Runs made under another plan (or none, or a plan recorded after runs had finished, or a
// recorded copy edited since) get no confirmatory verdict: every row is labelled exploratory.
TEST(Findings, APlanNotRecordedBeforeTheRunsDecidesNothing) {
  const std::string plan = Lab::shipped_plan();
  {
    Lab lab;
    fill_paper_world(lab);
    const json f = lab.findings();  // no record, no plan
    EXPECT_EQ(f["plan"]["status"], "none");
    EXPECT_TRUE(f["claims"].empty());
    EXPECT_NE(lab.md().find("No verdicts: no analysis plan was recorded"), std::string::npos) << lab.md();
    const json g = lab.findings(plan);  // a plan given afterwards
    EXPECT_EQ(g["plan"]["status"], "exploratory");
    EXPECT_TRUE(all_exploratory(g));
    EXPECT_NE(lab.md().find("EXPLORATORY ONLY"), std::string::npos);
    EXPECT_NE(lab.md().find("exploratory: reproduced"), std::string::npos);
  }
  {
    Lab lab;  // the recorded copy was edited after recording: its hash no longer matches
    fill_paper_world(lab);
    const std::string text = test::read(plan);
    lab.record(text + "# edited\n", sha256_hex(text));
    const json f = lab.findings(plan);
    EXPECT_EQ(f["plan"]["status"], "exploratory");
    EXPECT_NE(f["plan"]["reason"].get<std::string>().find("does not have the hash"), std::string::npos);
    EXPECT_TRUE(all_exploratory(f));
  }
  {
    Lab lab;  // recorded after 66 runs had finished
    fill_paper_world(lab);
    const std::string text = test::read(plan);
    lab.record(text, sha256_hex(text), 66);
    EXPECT_TRUE(all_exploratory(lab.findings(plan)));
    EXPECT_NE(lab.md().find("recorded after 66 runs had finished"), std::string::npos);
  }
}

// A rule changed after the runs (here mixing's margin, a threshold moved) shows beside the
// confirmatory row of its claim, labelled exploratory; the headline stays the recorded plan's.
TEST(Findings, AChangedRuleIsAnExploratoryRowBesideTheConfirmatoryOne) {
  Lab lab;
  fill_paper_world(lab);
  lab.record_shipped_plan();
  std::string text = test::read(Lab::shipped_plan());
  const std::string from =
      "id: mix_low_math, ability: math, test: difference, a: mixed, b: alone, share: "
      "smallest, side: above, threshold: 0";
  ASSERT_NE(text.find(from), std::string::npos);
  text.replace(
      text.find(from), from.size(),
      "id: mix_low_math_x, ability: math, test: difference, a: mixed, b: alone, share: smallest, side: "
      "above, threshold: 10");
  test::write(lab.file("later_plan.yaml"), text);
  const json f = lab.findings(lab.file("later_plan.yaml"));
  EXPECT_EQ(f["plan"]["status"], "confirmatory");
  const json& mixing = claim(f, "mixing_low_high");
  EXPECT_EQ(mixing["verdict"], "reproduced");  // the recorded plan's
  EXPECT_EQ(row_id(mixing, "mix_low_math")["analysis"], "confirmatory");
  bool found = false;
  for (const auto& r : mixing["exploratory_rows"])
    if (r["id"] == "mix_low_math_x") {
      found = true;
      EXPECT_EQ(r["analysis"], "exploratory");
      EXPECT_EQ(r["verdict"], "not reproduced");  // +3 points is not above 10
    }
  EXPECT_TRUE(found);
  EXPECT_NE(lab.md().find("exploratory: not reproduced"), std::string::npos);

  // A second seed set's verdicts beside these (scripts/repro.sh --seeds).
  Lab other;
  fill_paper_world(other);
  other.record_shipped_plan();
  other.findings("", lab.out_dir());
  EXPECT_NE(other.md().find("| other seeds |"), std::string::npos) << other.md();
  EXPECT_NE(other.md().find("(other seeds: confirmatory: reproduced)"), std::string::npos) << other.md();
}

// A malformed plan is an error naming the file, the key and what it takes: each closed choice
// (a run set, the test, the side, combine) is one of its names.
TEST(Findings, AMalformedPlanNamesItsFileAndKey) {
  struct Case {
    std::string row, key, expected;
  };
  const std::vector<Case> cases = {
      {"test: difference, a: alone, b: nonsense, side: above", "claims[0].rows[0].b",
       "expected alone, mixed, multi_task, sequential, mixed_sequential or dmt, got nonsense"},
      {"test: difference, a: dmt_k, b: alone, side: above", "claims[0].rows[0].a", "got dmt_k"},
      {"test: differences, a: alone, b: mixed, side: above", "claims[0].rows[0].test",
       "expected difference, log_linear or saturation, got differences"},
      {"test: difference, a: alone, b: mixed, side: over", "claims[0].rows[0].side",
       "expected above or below, got over"},
      {"test: difference, a: alone, b: mixed", "claims[0].rows[0].side", "missing"},
  };
  for (const auto& c : cases) {
    Lab lab;
    fill_paper_world(lab);
    test::write(
        lab.file("bad.yaml"),
        "version: 1\npaper: arXiv 2310.05492v4\nclaims:\n  - {id: c, claim: x, rows: [{id: r, ability: "
        "math, " +
            c.row + "}]}\n");
    try {
      lab.findings(lab.file("bad.yaml"));
      ADD_FAILURE() << "no error for " << c.row;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("bad.yaml: " + c.key + ":"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(c.expected), std::string::npos) << e.what();
    }
  }
  Lab lab;
  fill_paper_world(lab);
  test::write(lab.file("bad.yaml"),
              "version: 1\npaper: x\nclaims:\n  - {id: c, claim: x, combine: any, rows: [{id: r, ability: "
              "math, test: log_linear}]}\n");
  try {
    lab.findings(lab.file("bad.yaml"));
    ADD_FAILURE() << "no error for combine: any";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.yaml: claims[0].combine: expected all"), std::string::npos)
        << e.what();
  }
}

// A run whose config names a strategy sft does not know is an error naming its file, not a run
// silently left out of every run set.
TEST(Findings, ARunWithAnUnknownStrategyIsAnError) {
  Lab lab;
  fill_paper_world(lab);
  lab.run({{{"math", kFull[0]}, {"code", kFull[1]}, {"general", kFull[2]}}}, "multitask", 0, 9,
          {{"math", 0.5}, {"code", 0.5}, {"general", 0.5}});
  lab.record_shipped_plan();
  try {
    lab.findings();
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("config.resolved.json: config.strategy.name: \"multitask\" is not a "
                                         "strategy (multi_task, sequential, mixed_sequential, dmt, custom)"),
              std::string::npos)
        << e.what();
  }
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
