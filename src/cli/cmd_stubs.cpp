// Sub-commands that later modules fill in register here until they exist.
#include "cli/commands.h"

namespace sft::cli {

std::vector<Command> register_eval(CLI::App&) { return {}; }

}  // namespace sft::cli
