#include <cmath>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>

#include "commands.h"
#include "sft/util/error.h"

namespace sft::cli {

CLI::Validator in_range(double lo, double hi, bool lo_open, bool hi_open) {
  char range[96];
  std::snprintf(range, sizeof range, "%c%.15g, %.15g%c", lo_open ? '(' : '[', lo, hi, hi_open ? ')' : ']');
  const std::string want = range;
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        double v = 0;
        std::size_t used = 0;
        try {
          v = std::stod(text, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != text.size()) return "'" + text + "' is not a number; give one in " + want;
        if (!std::isfinite(v) || (lo_open ? v <= lo : v < lo) || (hi_open ? v >= hi : v > hi))
          return text + " is outside " + want;
        return "";
      },
      "in " + want);
}

std::vector<std::int64_t> parse_token_ids(const std::string& s, const std::string& flag) {
  std::vector<std::int64_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    std::size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v < 0 || v > INT32_MAX)
      throw ConfigError(flag + ": \"" + item + "\" is not a token id (expected e.g. 1,5,9)");
    ids.push_back(v);
  }
  return ids;
}

}  // namespace sft::cli
