// sft config expand: the fully resolved run as JSON (stages, sources, fractions, counts).
// sft config keys: every config key, its kind, default and meaning (docs/config.md).
#include <iostream>

#include "cli/commands.h"
#include "sft/config/run_config.h"
#include "sft/data/run_data.h"

namespace sft::cli {

CLI::Option* add_set_option(CLI::App* cmd, std::vector<std::string>& sets) {
  return cmd->add_option("--set", sets, "override a config key: key.path=value (repeatable)")
      ->type_name("KEY=VALUE")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
}

std::vector<Command> register_config(CLI::App& app) {
  auto* cmd = app.add_subcommand("config", "inspect run configurations");
  cmd->require_subcommand(1);
  auto* expand = cmd->add_subcommand("expand",
                                     "print the fully resolved run as JSON: every stage, its sources, the "
                                     "fraction drawn from each and the resulting sample counts");
  static std::string path;
  static std::vector<std::string> sets;
  expand->add_option("--config", path, "run configuration (YAML)")->required();
  add_set_option(expand, sets);
  auto* keys =
      cmd->add_subcommand("keys", "every config key: its kind, default and meaning, as a Markdown table");
  return {{expand,
           [] {
             config::RunConfig cfg = config::load_run_config(path, sets);
             data::DataPlan plan = data::plan_without_tokenizing(cfg);
             std::cout << data::expand_json(cfg, plan).dump(2) << "\n";
             return 0;
           }},
          {keys, [] {
             std::cout << config::key_reference_markdown();
             return 0;
           }}};
}

}  // namespace sft::cli
