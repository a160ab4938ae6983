// sft sweep: run a study (a grid of runs) from one file; sft sweep report: collect it.
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <iostream>

#include "cli/commands.h"
#include "sft/sweep/findings.h"
#include "sft/sweep/report.h"
#include "sft/sweep/sweep.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/log.h"

namespace sft::cli {
namespace {

std::string self_exe() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "sft";
  buf[n] = '\0';
  return buf;
}

// The one output_dir, or the deepest folder holding all of them.
std::string common_parent(const std::vector<std::string>& dirs) {
  if (dirs.size() == 1) return dirs[0];
  std::string prefix = dirs[0];
  for (const auto& d : dirs)
    while (!prefix.empty() && d.compare(0, prefix.size(), prefix) != 0) prefix.pop_back();
  const bool whole = std::all_of(dirs.begin(), dirs.end(), [&](const std::string& d) {
    return d.size() == prefix.size() || d[prefix.size()] == '/';
  });
  if (!whole)
    prefix = prefix.substr(0, prefix.find_last_of('/') == std::string::npos ? 0 : prefix.find_last_of('/'));
  while (prefix.size() > 1 && prefix.back() == '/') prefix.pop_back();
  return prefix.empty() ? "." : prefix;
}

// The flags of `sft sweep` and of `sft sweep report`.
struct SweepArgs {
  // sft sweep
  std::string path, emit, sft_path;
  std::vector<std::string> sets;
  bool dry = false, json = false;
  int jobs = 1;
  // sft sweep report
  std::vector<std::string> report_paths, report_sets;
  std::string findings_dir, plan_file, compare_dir;
};
SweepArgs S;

// sft sweep's flags.
void add_sweep_options(CLI::App* cmd) {
  cmd->add_option("--config", S.path, "sweep file (YAML: name, base, set, axes, output_dir)");
  add_set_option(cmd, S.sets);
  cmd->add_flag("--dry-run", S.dry, "list the runs with their stage plans and cost (tokens, steps) and exit");
  cmd->add_option("--emit", S.emit, "slurm: write a Slurm array script (one run per task) instead of running")
      ->check(CLI::IsMember({"slurm"}));
  cmd->add_option("--sft", S.sft_path, "the sft binary the runs use (default: this one)");
  cmd->add_flag("--json", S.json, "with --dry-run: print JSON");
  cmd->add_option("--jobs", S.jobs, "runs trained at once locally, each with cores/jobs threads (default 1)")
      ->check(CLI::Range(1, 256));
}

// sft sweep report and its flags.
CLI::App* add_report_command(CLI::App* cmd) {
  auto* report = cmd->add_subcommand("report",
                                     "collect the runs' eval scores: CSV, Markdown table (mean ± std over "
                                     "seeds), log-linear fits per ability; plots via scripts/plot_sweep.py; "
                                     "and the paper's findings decided over the runs of every file given");
  report
      ->add_option("--config", S.report_paths, "sweep file (repeatable: the findings pool every file's runs)")
      ->required();
  add_set_option(report, S.report_sets);
  report->add_option(
      "--findings-dir", S.findings_dir,
      "where findings.{md,json} go (default: the sweep's output_dir, or with several files the folder "
      "holding their output_dirs)");
  report->add_option(
      "--plan", S.plan_file,
      "an analysis plan to judge by now (configs/repro/analysis_plan.yaml). Verdicts are "
      "confirmatory only from the plan recorded in the findings folder before the runs "
      "(analysis_plan.record.json, written by scripts/repro.sh); a plan given here that differs "
      "from it adds rows labelled exploratory");
  report->add_option("--compare", S.compare_dir,
                     "a folder holding another study's findings.json (e.g. the same study on other seeds): "
                     "its verdicts are put beside these in findings.md");
  return report;
}

// sft sweep report: each file's report, then the findings over all their runs.
int run_report() {
  std::vector<sweep::SweepRun> pooled;
  std::vector<std::string> outs;
  for (const auto& path : S.report_paths) {
    auto spec = sweep::load_sweep(path, S.report_sets);
    auto runs = sweep::expand(spec);
    sweep::build_report(spec, runs);
    std::cout << fs::read_file(fs::join(spec.output_dir, "report.md"));
    std::cout << "\nwrote " << spec.output_dir << "/report.{csv,md,json}; plots: scripts/plot_sweep.py "
              << spec.output_dir << "/report.json\n\n";
    pooled.insert(pooled.end(), runs.begin(), runs.end());
    outs.push_back(spec.output_dir);
  }
  const std::string dir = S.findings_dir.empty() ? common_parent(outs) : S.findings_dir;
  sweep::build_findings(pooled, dir, {dir, S.plan_file, S.compare_dir});
  std::cout << fs::read_file(fs::join(dir, "findings.md")) << "\nwrote " << dir << "/findings.{md,json}\n";
  return 0;
}

// --dry-run: each run's tokens, steps and stages (or with --json all of describe()).
int print_dry_run(const sweep::SweepSpec& spec, const std::vector<sweep::SweepRun>& runs) {
  auto d = sweep::describe(spec, runs);
  if (S.json) {
    std::cout << d.dump(2) << "\n";
    return 0;
  }
  std::cout << "sweep " << spec.name << ": " << runs.size() << " runs, " << d["total_tokens"].get<long long>()
            << " tokens, " << d["total_steps"].get<long long>() << " optimizer steps\n";
  for (const auto& r : d["list"]) {
    std::cout << "  " << r["name"].get<std::string>() << (r["finished"].get<bool>() ? " (finished)" : "")
              << ": " << r["tokens"].get<long long>() << " tokens, " << r["steps"].get<long long>()
              << " steps |";
    for (const auto& st : r["stages"])
      std::cout << " " << st["name"].get<std::string>() << " " << st["samples"].get<long long>()
                << " samples";
    std::cout << "\n";
  }
  return 0;
}

// Trains the runs here, then reports; the exit code says whether any failed or a signal stopped it.
int train_locally(const sweep::SweepSpec& spec, const std::vector<sweep::SweepRun>& runs,
                  const std::string& exe) {
  const sweep::LocalResult done = sweep::run_local(spec, runs, exe, S.jobs);
  if (done.signal) {
    sft::log::warn(
        "sweep {}: stopped by signal {}; the runs it started saved a checkpoint. Rerun the same "
        "command to continue",
        spec.name, done.signal);
    return 128 + done.signal;
  }
  sweep::build_report(spec, runs);
  sft::log::info(
      "sweep {}: {} runs, {} failed{}; report in {}/report.md", spec.name, runs.size(), done.failed,
      done.skipped
          ? ", " + std::to_string(done.skipped) + " skipped (held by another process: rerun once it is done)"
          : std::string(),
      spec.output_dir);
  return done.failed ? 1 : 0;
}

// sft sweep: the dry run, a Slurm array, or the runs trained here.
int run_sweep() {
  if (S.path.empty())
    throw sft::ConfigError("sft sweep: --config is required (or: sft sweep report --config F)");
  auto spec = sweep::load_sweep(S.path, S.sets);
  auto runs = sweep::expand(spec);
  const std::string exe = S.sft_path.empty() ? self_exe() : S.sft_path;
  if (S.dry) return print_dry_run(spec, runs);
  sweep::materialise(spec, runs);
  if (!S.emit.empty()) {  // --emit's one target: slurm
    std::cout << sweep::emit_slurm(spec, runs, exe) << "\n";
    return 0;
  }
  return train_locally(spec, runs, exe);
}

}  // namespace

std::vector<Command> register_sweep(CLI::App& app) {
  auto* cmd = app.add_subcommand("sweep",
                                 "run a grid of training runs from one sweep file (skipping finished runs, "
                                 "resuming interrupted ones), or emit a Slurm array for it");
  cmd->require_subcommand(0, 1);  // `report` is optional
  add_sweep_options(cmd);
  auto* report = add_report_command(cmd);
  return {{report, run_report}, {cmd, run_sweep}};
}

}  // namespace sft::cli
