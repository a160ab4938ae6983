// Sweeps: grid expansion (the repro files' grids, k only for DMT, zipped axes, identical runs
// once), the log-linear fit, Slurm emission, and a 2x2 micro-sweep run end to end.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "sft/sweep/report.h"
#include "sft/sweep/sweep.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft::sweep {
namespace {

std::string repro(const std::string& name) {
  return test::source_dir() + "/configs/repro/" + name + ".sweep.yaml";
}

// Sweep files name their base config and data relative to the repository root, where users
// run them; ctest runs in the build folder.
class InSourceDir {
 public:
  InSourceDir() : old_(::get_current_dir_name()) {
    if (::chdir(test::source_dir().c_str()) != 0) ADD_FAILURE() << "chdir " << test::source_dir();
  }
  ~InSourceDir() {
    if (::chdir(old_) != 0) ADD_FAILURE() << "chdir back";
    std::free(old_);
  }

 private:
  char* old_;
};

std::string values_of(const SweepRun& r, const std::string& axis) {
  for (const auto& [k, v] : r.values)
    if (k == axis) return v;
  return "";
}

TEST(SweepExpand, TheReproFilesListThePapersGrids) {
  InSourceDir here;
  const std::map<std::string, std::size_t> expected = {{"rq1_math", 15},       {"rq1_code", 15},
                                                       {"rq1_general", 15},    {"rq2_mixed", 15},
                                                       {"rq4_strategies", 20}, {"rq4_dmt_k", 15}};
  for (const auto& [name, count] : expected) {
    auto spec = load_sweep(repro(name));
    auto runs = expand(spec);
    EXPECT_EQ(runs.size(), count) << name;
    std::set<std::string> hashes, names;
    for (const auto& r : runs) {
      hashes.insert(r.hash);
      names.insert(r.name);
    }
    EXPECT_EQ(hashes.size(), runs.size()) << name << ": every run is a distinct configuration";
    EXPECT_EQ(names.size(), runs.size()) << name;
  }
  // RQ1: the five fractions of the paper, each with three seeds.
  auto runs = expand(load_sweep(repro("rq1_math")));
  std::set<std::string> fractions;
  for (const auto& r : runs) fractions.insert(values_of(r, "datasets.math.fraction"));
  EXPECT_EQ(fractions, (std::set<std::string>{"1", "1/4", "1/16", "1/64", "1/256"}));
}

TEST(SweepExpand, KAppliesOnlyToDmtAndZippedAxesMoveTogether) {
  test::TempDir d;
  test::write(d.file("s.yaml"), "name: s\nbase: " + test::source_dir() +
                                    "/configs/repro/base.yaml\n"
                                    "axes:\n"
                                    "  strategy: [multi_task, dmt]\n"
                                    "  strategy.k: [1, 1/4]\n"
                                    "  datasets.math.fraction,datasets.code.fraction: [1, 1/4]\n"
                                    "output_dir: " +
                                    d.file("out") + "\nruns_dir: " + d.file("runs") + "\n");
  auto runs = expand(load_sweep(d.file("s.yaml")));
  // multi_task ignores k: 1 x 2 zipped values; dmt: 2 k x 2 zipped values.
  ASSERT_EQ(runs.size(), 6u);
  int dmt = 0;
  for (const auto& r : runs) {
    if (values_of(r, "strategy") == "dmt") ++dmt;
    EXPECT_FALSE(r.dir.empty());
    EXPECT_EQ(r.dir.rfind(d.file("runs"), 0), 0u) << r.dir;
  }
  EXPECT_EQ(dmt, 4);
}

TEST(SweepExpand, IdenticalRunsInTwoSweepsShareOneDirectory) {
  InSourceDir here;
  // RQ4's DMT run with k = 1/256 is the same configuration in both RQ4 sweeps.
  auto strategies = expand(load_sweep(repro("rq4_strategies")));
  auto ks = expand(load_sweep(repro("rq4_dmt_k")));
  std::set<std::string> a, b;
  for (const auto& r : strategies) a.insert(r.dir);
  for (const auto& r : ks) b.insert(r.dir);
  int shared = 0;
  for (const auto& dir : a) shared += static_cast<int>(b.count(dir));
  EXPECT_EQ(shared, 3) << "dmt with k = 1/256, seeds 1-3";
}

TEST(SweepExpand, AnUnknownKeyNamesTheFileAndTheKey) {
  test::TempDir d;
  test::write(d.file("s.yaml"),
              "name: s\nbase: " + test::source_dir() + "/configs/repro/base.yaml\naxes:\n  sead: [1, 2]\n");
  try {
    expand(load_sweep(d.file("s.yaml")));
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("sead"), std::string::npos) << e.what();
  }
}

// The interval of a mean over seeds: Student's t with n - 1 degrees of freedom (the table's
// values), shrinking towards the normal's 1.96 as seeds grow.
// A run is finished once trained, and evaluated when its config evaluates (issue 33: a sweep
// without evaluation reported "0 of 2 runs finished" and retrained them every time).
TEST(SweepRunFinished, NeedsTheEvalSummaryOnlyWhenTheRunEvaluates) {
  test::TempDir d;
  SweepRun run;
  run.dir = d.file("run");
  for (const char* sub : {"/final", "/eval"}) fs::make_dirs(run.dir + sub);
  auto config = [&](const std::string& eval) {
    test::write(run.dir + "/config.resolved.json", R"({"config": {"eval": )" + eval + "}}");
  };
  config(R"({"at_end": true, "at_stage_end": false, "benchmarks": ["math"]})");
  EXPECT_FALSE(run_finished(run)) << "no final model yet";
  test::write(run.dir + "/final/model.safetensors", "x");
  EXPECT_FALSE(run_finished(run)) << "evaluates, no summary yet";
  test::write(run.dir + "/eval/summary.json", "{}");
  EXPECT_TRUE(run_finished(run));
  fs::remove_all(run.dir + "/eval/summary.json");
  config(R"({"at_end": true, "at_stage_end": false, "benchmarks": []})");
  EXPECT_TRUE(run_finished(run)) << "nothing to evaluate";
  config(R"({"at_end": false, "at_stage_end": false, "benchmarks": ["math"]})");
  EXPECT_TRUE(run_finished(run)) << "evaluation off";
  test::write(run.dir + "/config.resolved.json", "{not json");
  EXPECT_FALSE(run_finished(run)) << "an unreadable config is retrained, not skipped";
}

TEST(SweepFit, TheMeanIntervalOverSeedsUsesStudentsT) {
  EXPECT_DOUBLE_EQ(t_critical_95(1), 12.7062);
  EXPECT_DOUBLE_EQ(t_critical_95(2), 4.3027);
  EXPECT_DOUBLE_EQ(t_critical_95(4), 2.7764);
  EXPECT_DOUBLE_EQ(t_critical_95(30), 2.0423);
  EXPECT_NEAR(t_critical_95(60), 2.0003, 1e-12);
  EXPECT_NEAR(t_critical_95(1000000), 1.96, 1e-3);
  EXPECT_TRUE(std::isnan(t_critical_95(0)));
  for (int dof = 1; dof < 500; ++dof) EXPECT_GT(t_critical_95(dof), t_critical_95(dof + 1)) << dof;
  const MeanInterval m = mean_interval95({0.1, 0.2, 0.3});
  EXPECT_EQ(m.n, 3);
  EXPECT_NEAR(m.mean, 0.2, 1e-12);
  EXPECT_NEAR(m.sd, 0.1, 1e-12);
  EXPECT_NEAR(m.hi - m.mean, 4.3027 * 0.1 / std::sqrt(3.0), 1e-12);
  EXPECT_NEAR(m.mean - m.lo, m.hi - m.mean, 1e-12);
  const MeanInterval one = mean_interval95({0.4});
  EXPECT_EQ(one.lo, 0.4);
  EXPECT_EQ(one.hi, 0.4);
}

TEST(SweepFit, RecoversAnExactLogLinearLawAndScoresNoiseLow) {
  std::vector<double> x = {24, 96, 384, 1536, 6144}, y;
  for (double v : x) y.push_back(0.1 + 0.05 * std::log(v));
  LogFit f = fit_log(x, y);
  EXPECT_NEAR(f.a, 0.1, 1e-9);
  EXPECT_NEAR(f.b, 0.05, 1e-9);
  EXPECT_NEAR(f.r2, 1.0, 1e-9);
  EXPECT_EQ(f.n, 5);
  LogFit flat = fit_log(x, {0.5, 0.1, 0.5, 0.1, 0.5});
  EXPECT_LT(flat.r2, 0.2);
}

TEST(SweepCli, DryRunListsEachReproGrid) {
  for (const char* name : {"rq1_math", "rq4_strategies"}) {
    auto r = test::run_sft(
        {"sweep", "--dry-run", "--config", "configs/repro/" + std::string(name) + ".sweep.yaml"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find(std::string("sweep ") + name + ": " +
                         (name == std::string("rq1_math") ? "15" : "20") + " runs"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("steps"), std::string::npos);
  }
}

TEST(SweepCli, EmitSlurmWritesAnArrayWithOneTaskPerRun) {
  test::TempDir d;
  auto r = test::run_sft({"sweep", "--config", "configs/repro/rq4_strategies.sweep.yaml", "--emit", "slurm",
                          "--set", "output_dir=" + d.file("out"), "--set", "runs_dir=" + d.file("runs")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string script = test::read(d.file("out/sweep.sbatch"));
  EXPECT_NE(script.find("#SBATCH --array=0-19"), std::string::npos) << script;
  EXPECT_NE(script.find("train --config \"$CONFIG\" --resume auto"), std::string::npos);
  // CPUs per rank come from the node (a fixed 12 x 8 per node would not start on smaller nodes).
  EXPECT_EQ(script.find("--cpus-per-task=12"), std::string::npos) << script;
  EXPECT_NE(script.find("cpus_per_task=$(( ${SLURM_CPUS_ON_NODE:-$ranks_per_node} / ranks_per_node ))"),
            std::string::npos)
      << script;
  std::string list = test::read(d.file("out/runs.txt"));
  EXPECT_EQ(std::count(list.begin(), list.end(), '\n'), 20);
}

TEST(SweepCli, ThePaperSweepCoversThreeModelSizesWithOneArrayPerGpuCount) {
  test::TempDir d;
  auto r = test::run_sft({"sweep", "--config", "configs/paper/table1.sweep.yaml", "--emit", "slurm", "--set",
                          "output_dir=" + d.file("out"), "--set", "runs_dir=" + d.file("runs")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // 7B and 13B on 8 GPUs (one node), 33B on 16 (two nodes): four strategies each.
  std::string eight = test::read(d.file("out/sweep-8gpu.sbatch")),
              sixteen = test::read(d.file("out/sweep-16gpu.sbatch"));
  EXPECT_NE(eight.find("#SBATCH --array=0-7"), std::string::npos) << eight;
  EXPECT_NE(eight.find("#SBATCH --nodes=1"), std::string::npos);
  EXPECT_NE(sixteen.find("#SBATCH --array=0-3"), std::string::npos) << sixteen;
  EXPECT_NE(sixteen.find("#SBATCH --nodes=2"), std::string::npos);
  std::string runs = test::read(d.file("out/runs-16gpu.txt"));
  EXPECT_EQ(std::count(runs.begin(), runs.end(), '\n'), 4);
  auto dry = test::run_sft({"sweep", "--dry-run", "--config", "configs/paper/table1.sweep.yaml"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_NE(dry.out.find("sweep table1: 12 runs"), std::string::npos) << dry.out;
  EXPECT_NE(dry.out.find("base=llama_33b.strategy=dmt"), std::string::npos);
}

// The acceptance test of the sweep issue: a 2x2 grid (two math fractions x two seeds) on the
// tiny config, trained, evaluated and reported; then a second invocation skips all four.
TEST(SweepEndToEnd, ATwoByTwoMicroSweepTrainsEvaluatesAndReports) {
  test::TempDir d;
  // The repro runs fine-tune the pretrained base: a 3-step one stands in for it here.
  auto base = test::run_sft({"train", "--config", "configs/repro/pretrain.yaml", "--output-dir",
                             d.file("base"), "--set", "train.max_steps=3", "--set", "train.threads=1",
                             "--set", "data.cache_dir=" + d.file("cache")});
  ASSERT_EQ(base.exit_code, 0) << base.err;
  test::write(d.file("micro.yaml"),
              "name: micro\n"
              "base: configs/repro/base.yaml\n"
              "set:\n"
              "  strategy: multi_task\n"
              "  train.threads: 1\n"
              "  model.path: " +
                  d.file("base/final") +
                  "\n"
                  "  data.cache_dir: " +
                  d.file("cache") +
                  "\n"
                  "  datasets.code.fraction: 1/256\n"
                  "  datasets.general.fraction: 1/32\n"
                  "  eval.max_new_tokens: 24\n"
                  "  eval.benchmarks:\n"
                  "    - {name: math, data: data/tiny/math_test.jsonl, limit: 8}\n"
                  "    - {name: general, data: data/tiny/general_test.json, limit: 8}\n"
                  "axes:\n"
                  "  datasets.math.fraction: [1/64, 1/16]\n"
                  "  seed: [1, 2]\n"
                  "output_dir: " +
                  d.file("out") +
                  "\n"
                  "runs_dir: " +
                  d.file("runs") + "\n");
  auto r = test::run_sft({"sweep", "--config", d.file("micro.yaml"), "--jobs", "2"}, {}, 900);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  // CSV: a header and one row per run with both scores.
  std::string csv = test::read(d.file("out/report.csv"));
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 5) << csv;
  EXPECT_NE(csv.find("math"), std::string::npos);
  EXPECT_NE(csv.find("general"), std::string::npos);

  // JSON: four finished runs, two groups (one per fraction) of two seeds, a math fit over
  // the two data amounts (384 vs 96 records: the fraction is applied exactly).
  auto rep = nlohmann::json::parse(test::read(d.file("out/report.json")));
  EXPECT_EQ(rep["finished"], 4);
  EXPECT_EQ(rep["groups"].size(), 2u);
  for (const auto& g : rep["groups"]) {
    EXPECT_EQ(g["seeds"], 2);
    for (const auto& [ability, iv] : g["ci95"].items()) {  // the mean inside its 95% interval
      EXPECT_LE(iv[0].get<double>(), g["mean"][ability].get<double>()) << ability;
      EXPECT_GE(iv[1].get<double>(), g["mean"][ability].get<double>()) << ability;
    }
  }
  ASSERT_TRUE(rep["fits"].contains("math")) << rep.dump(1);
  EXPECT_EQ(rep["fits"]["math"]["n"], 4);
  if (!rep["fits"]["math"]["r2"].is_null()) {  // null when all four scores are equal
    const double r2 = rep["fits"]["math"]["r2"];
    EXPECT_GE(r2, 0.0);
    EXPECT_LE(r2, 1.0);
  }
  std::set<double> amounts;
  for (const auto& run : rep["runs"]) {
    ASSERT_TRUE(run["finished"].get<bool>());
    for (const auto& [ability, score] : run["scores"].items()) {
      EXPECT_GE(score.get<double>(), 0.0) << ability;
      EXPECT_LE(score.get<double>(), 1.0) << ability;
    }
    amounts.insert(run["records"]["math"].get<double>());
  }
  EXPECT_EQ(amounts, (std::set<double>{96, 384}));

  // Markdown: mean ± std over the seeds and the fit line.
  std::string md = test::read(d.file("out/report.md"));
  EXPECT_NE(md.find("±"), std::string::npos) << md;
  EXPECT_NE(md.find("4 of 4 runs finished"), std::string::npos) << md;
  EXPECT_NE(md.find("math: score = "), std::string::npos) << md;
  EXPECT_NE(md.find("R^2"), std::string::npos);

  // The plotting script draws the scaling curve (matplotlib is in setup.sh's venv).
  if (!test::python().empty()) {
    auto plot = test::run_program({test::python(), test::source_dir() + "/scripts/plot_sweep.py",
                                   d.file("out/report.json"), "-o", d.file("out/micro.png")});
    ASSERT_EQ(plot.exit_code, 0) << plot.err;
    EXPECT_EQ(test::read(d.file("out/micro.png")).substr(1, 3), "PNG");
  }

  // Running it again trains nothing: every run is finished.
  auto again = test::run_sft({"sweep", "--config", d.file("micro.yaml")}, {}, 120);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  const std::string log = again.out + again.err;
  std::size_t skipped = 0;
  for (auto p = log.find("already finished"); p != std::string::npos; p = log.find("already finished", p + 1))
    ++skipped;
  EXPECT_EQ(skipped, 4u) << log;
  auto report = test::run_sft({"sweep", "report", "--config", d.file("micro.yaml")});
  ASSERT_EQ(report.exit_code, 0) << report.err;
  EXPECT_NE(report.out.find("4 of 4 runs finished"), std::string::npos);

  // No analysis plan was recorded with these runs and none was given: no claim is decided.
  const auto f = nlohmann::json::parse(test::read(d.file("out/findings.json")));
  EXPECT_EQ(f["finished_runs"], 4);
  EXPECT_EQ(f["plan"]["status"], "none");
  EXPECT_TRUE(f["claims"].empty());
  // Under the shipped plan, given afterwards: every row exploratory, and each lacks its runs
  // (this grid has no ability alone, no even mixes, no full-data strategies).
  auto later = test::run_sft({"sweep", "report", "--config", d.file("micro.yaml"), "--plan",
                              test::source_dir() + "/configs/repro/analysis_plan.yaml"});
  ASSERT_EQ(later.exit_code, 0) << later.err;
  const auto g = nlohmann::json::parse(test::read(d.file("out/findings.json")));
  EXPECT_EQ(g["plan"]["status"], "exploratory");
  ASSERT_EQ(g["claims"].size(), 7u);
  for (const auto& c : g["claims"]) {
    EXPECT_EQ(c["analysis"], "exploratory");
    EXPECT_EQ(c["verdict"], "no runs") << c.dump();
  }
  EXPECT_NE(report.out.find("wrote " + d.file("out") + "/findings.{md,json}"), std::string::npos)
      << report.out;
}

}  // namespace
}  // namespace sft::sweep
