// Logging to stderr (stdout stays for machine-readable output): "[HH:MM:SS] <tag>level message".
//
// Formatting is {fmt}'s, from the copy every LibTorch 2.x ships in its include folder
// (used header-only). spdlog is not used: Debian's spdlog is built against fmt 9, and
// LibTorch's fmt 12 headers come first on the include path, so the two cannot meet in
// one translation unit (docs/toolchain.md).
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>
#include <utility>

namespace sft::log {

enum class Level { kInfo = 0, kWarn = 1, kError = 2 };

void set_level(Level level);    // messages below it are dropped
void set_tag(std::string tag);  // printed before the level, e.g. "[rank 1] "
bool enabled(Level level);
void write(Level level, std::string_view message);

template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::kInfo)) write(Level::kInfo, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::kWarn)) write(Level::kWarn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::kError)) write(Level::kError, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace sft::log
