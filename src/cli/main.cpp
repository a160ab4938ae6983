// sft: the command line. Sub-command dispatch and error reporting, nothing else.
// Exit codes: 0 success, 1 failure, 2 usage or configuration error.
#include <c10/util/Exception.h>

#include <cstdlib>
#include <iostream>

#include "cli/commands.h"
#include "sft/util/error.h"
#include "sft/util/safe_io.h"
#include "sft/util/log.h"
#include "sft/util/malloc_tuning.h"

int main(int argc, char** argv) {
  sft::tune_malloc();
  // Logs go to stderr so that JSON on stdout stays machine-readable.
  const char* rank = std::getenv("RANK");
  const char* world = std::getenv("WORLD_SIZE");
  const std::string tag =
      rank && world && std::string(world) != "1" ? std::string("[rank ") + rank + "] " : "";
  if (!tag.empty()) {
    sft::log::set_tag(tag);
    if (std::string(rank) != "0") sft::log::set_level(sft::log::Level::kWarn);  // rank 0 speaks for the job
  }

  CLI::App app{
      "sft: supervised fine-tuning of LLaMA-family models on LibTorch, with the data-composition "
      "strategies of Dong et al. (2024): multi-task, sequential, mixed sequential and DMT."};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "show help for every sub-command");
  std::vector<sft::cli::Command> commands;
  for (auto reg : {sft::cli::register_version, sft::cli::register_train, sft::cli::register_config,
                   sft::cli::register_data, sft::cli::register_model, sft::cli::register_eval,
                   sft::cli::register_sweep, sft::cli::register_bench, sft::cli::register_tokenize}) {
    auto c = reg(app);
    commands.insert(commands.end(), c.begin(), c.end());
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (argc > 1 && argv[1][0] != '-') {
      // A first word that names no command: say so, rather than CLI11's "a subcommand is required".
      std::string known;
      bool found = false;
      for (const auto* sub : app.get_subcommands([](CLI::App*) { return true; })) {
        known += (known.empty() ? "" : ", ") + sub->get_name();
        found |= sub->get_name() == argv[1];
      }
      if (!found) {
        std::cerr << tag << "sft: error: unknown command '" << argv[1] << "'; the commands are " << known
                  << " (sft --help)\n";
        return 2;
      }
    }
    app.exit(e);
    return 2;
  }
  try {
    for (const auto& c : commands)
      if (c.app->parsed()) return c.run();
    std::cerr << app.help();
    return 2;
  } catch (const sft::Error& e) {
    std::cerr << tag << "sft: error: " << e.what() << "\n";
    return e.exit_code();
  } catch (const c10::Error& e) {
    std::cerr << tag << "sft: error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << tag << "sft: error: " << sft::json_error_text(e) << "\n";  // no library's error numbering
    return 1;
  }
}
