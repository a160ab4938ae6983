#include <cmath>
#include <cstdio>
#include <string>

#include "commands.h"

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

}  // namespace sft::cli
