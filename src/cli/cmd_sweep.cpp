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

}  // namespace

std::vector<Command> register_sweep(CLI::App& app) {
  auto* cmd = app.add_subcommand("sweep",
                                 "run a grid of training runs from one sweep file (skipping finished runs, "
                                 "resuming interrupted ones), or emit a Slurm array for it");
  cmd->require_subcommand(0, 1);  // `report` is optional
  static std::string path, emit, sft_path;
  static std::vector<std::string> sets;
  static bool dry = false, json = false;
  static int jobs = 1;
  cmd->add_option("--config", path, "sweep file (YAML: name, base, set, axes, output_dir)");
  add_set_option(cmd, sets);
  cmd->add_flag("--dry-run", dry, "list the runs with their stage plans and cost (tokens, steps) and exit");
  cmd->add_option("--emit", emit, "slurm: write a Slurm array script (one run per task) instead of running")
      ->check(CLI::IsMember({"slurm"}));
  cmd->add_option("--sft", sft_path, "the sft binary the runs use (default: this one)");
  cmd->add_flag("--json", json, "with --dry-run: print JSON");
  cmd->add_option("--jobs", jobs, "runs trained at once locally, each with cores/jobs threads (default 1)")
      ->check(CLI::Range(1, 256));

  auto* report = cmd->add_subcommand("report",
                                     "collect the runs' eval scores: CSV, Markdown table (mean ± std over "
                                     "seeds), log-linear fits per ability; plots via scripts/plot_sweep.py; "
                                     "and the paper's findings decided over the runs of every file given");
  static std::vector<std::string> rpaths;
  static std::vector<std::string> rsets;
  static std::string findings_dir, plan_file, compare_dir;
  report->add_option("--config", rpaths, "sweep file (repeatable: the findings pool every file's runs)")
      ->required();
  add_set_option(report, rsets);
  report->add_option(
      "--findings-dir", findings_dir,
      "where findings.{md,json} go (default: the sweep's output_dir, or with several files the folder "
      "holding their output_dirs)");
  report->add_option(
      "--plan", plan_file,
      "an analysis plan to judge by now (configs/repro/analysis_plan.yaml). Verdicts are "
      "confirmatory only from the plan recorded in the findings folder before the runs "
      "(analysis_plan.record.json, written by scripts/repro.sh); a plan given here that differs "
      "from it adds rows labelled exploratory");
  report->add_option("--compare", compare_dir,
                     "a folder holding another study's findings.json (e.g. the same study on other seeds): "
                     "its verdicts are put beside these in findings.md");

  return {{report,
           [] {
             std::vector<sweep::SweepRun> pooled;
             std::vector<std::string> outs;
             for (const auto& path : rpaths) {
               auto spec = sweep::load_sweep(path, rsets);
               auto runs = sweep::expand(spec);
               sweep::build_report(spec, runs);
               std::cout << fs::read_file(fs::join(spec.output_dir, "report.md"));
               std::cout << "\nwrote " << spec.output_dir
                         << "/report.{csv,md,json}; plots: scripts/plot_sweep.py " << spec.output_dir
                         << "/report.json\n\n";
               pooled.insert(pooled.end(), runs.begin(), runs.end());
               outs.push_back(spec.output_dir);
             }
             const std::string dir = findings_dir.empty() ? common_parent(outs) : findings_dir;
             sweep::build_findings(pooled, dir, {dir, plan_file, compare_dir});
             std::cout << fs::read_file(fs::join(dir, "findings.md")) << "\nwrote " << dir
                       << "/findings.{md,json}\n";
             return 0;
           }},
          {cmd, [] {
             if (path.empty())
               throw sft::ConfigError("sft sweep: --config is required (or: sft sweep report --config F)");
             auto spec = sweep::load_sweep(path, sets);
             auto runs = sweep::expand(spec);
             const std::string exe = sft_path.empty() ? self_exe() : sft_path;
             if (dry) {
               auto d = sweep::describe(spec, runs);
               if (json) {
                 std::cout << d.dump(2) << "\n";
               } else {
                 std::cout << "sweep " << spec.name << ": " << runs.size() << " runs, "
                           << d["total_tokens"].get<long long>() << " tokens, "
                           << d["total_steps"].get<long long>() << " optimizer steps\n";
                 for (const auto& r : d["list"]) {
                   std::cout << "  " << r["name"].get<std::string>()
                             << (r["finished"].get<bool>() ? " (finished)" : "") << ": "
                             << r["tokens"].get<long long>() << " tokens, " << r["steps"].get<long long>()
                             << " steps |";
                   for (const auto& st : r["stages"])
                     std::cout << " " << st["name"].get<std::string>() << " "
                               << st["samples"].get<long long>() << " samples";
                   std::cout << "\n";
                 }
               }
               return 0;
             }
             sweep::materialise(spec, runs);
             if (emit == "slurm") {
               std::cout << sweep::emit_slurm(spec, runs, exe) << "\n";
               return 0;
             }
             const sweep::LocalResult done = sweep::run_local(spec, runs, exe, jobs);
             if (done.signal) {
               sft::log::warn(
                   "sweep {}: stopped by signal {}; the runs it started saved a checkpoint. Rerun the same "
                   "command to continue",
                   spec.name, done.signal);
               return 128 + done.signal;
             }
             sweep::build_report(spec, runs);
             sft::log::info("sweep {}: {} runs, {} failed{}; report in {}/report.md", spec.name, runs.size(),
                            done.failed,
                            done.skipped ? ", " + std::to_string(done.skipped) +
                                               " skipped (held by another process: rerun once it is done)"
                                         : std::string(),
                            spec.output_dir);
             return done.failed ? 1 : 0;
           }}};
}

}  // namespace sft::cli
