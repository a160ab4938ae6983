// Sub-command registration. Each cmd_*.cpp adds its sub-command to the CLI11 app and
// returns the function that runs it; main.cpp only dispatches and maps errors to exit codes.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sft::cli {

using Runner = std::function<int()>;

struct Command {
  CLI::App* app;
  Runner run;
};

std::vector<Command> register_version(CLI::App& app);
std::vector<Command> register_train(CLI::App& app);
std::vector<Command> register_config(CLI::App& app);
std::vector<Command> register_data(CLI::App& app);
std::vector<Command> register_model(CLI::App& app);  // score, generate
std::vector<Command> register_eval(CLI::App& app);
std::vector<Command> register_sweep(CLI::App& app);
std::vector<Command> register_bench(CLI::App& app);
std::vector<Command> register_tokenize(CLI::App& app);

// A numeric flag's check: the whole text parses, the value is finite and within the range
// (nan, inf and trailing junk are refused). CLI11 then reports "--flag: <why>", exit code 2.
CLI::Validator in_range(double lo, double hi, bool lo_open = false, bool hi_open = false);

// Comma-separated token ids ("1,5,9"), each a whole number in [0, 2^31); anything else is a
// ConfigError naming `flag` and the item. Whether an id is in a vocabulary is the caller's.
std::vector<std::int64_t> parse_token_ids(const std::string& s, const std::string& flag);

// Repeated `--set key.path=value` option.
CLI::Option* add_set_option(CLI::App* cmd, std::vector<std::string>& sets);

}  // namespace sft::cli
