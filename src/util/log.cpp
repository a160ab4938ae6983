#include "sft/util/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace sft::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::mutex g_mutex;
std::string g_tag;

}  // namespace

void set_level(Level level) { g_level = static_cast<int>(level); }

void set_tag(std::string tag) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_tag = std::move(tag);
}

bool enabled(Level level) { return static_cast<int>(level) >= g_level.load(); }

void write(Level level, std::string_view message) {
  static const bool color = ::isatty(STDERR_FILENO) != 0;
  static constexpr const char* kNames[] = {"info", "warning", "error"};
  static constexpr const char* kColors[] = {"\033[32m", "\033[33m\033[1m", "\033[31m\033[1m"};
  const int i = static_cast<int>(level);
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&now, &tm);
  char clock[16];
  std::strftime(clock, sizeof clock, "%H:%M:%S", &tm);
  std::lock_guard<std::mutex> lock(g_mutex);
  std::string line = fmt::format("[{}] {}{}{}{} {}\n", clock, g_tag, color ? kColors[i] : "", kNames[i],
                                 color ? "\033[0m" : "", message);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace sft::log
