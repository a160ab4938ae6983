#include "config/reader.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <set>
#include <sstream>

namespace sft::config {
namespace {

// Levenshtein distance, for "did you mean" hints on unknown keys.
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

std::string fmt_double(double v) {
  std::ostringstream s;
  s.precision(10);
  s << v;
  return s.str();
}

const Tree* Reader::find(const std::string& path) const {
  const Tree* node = &doc_.root;
  for (const auto& p : split_key_path(path)) {
    if (node->is_object()) {
      if (!node->contains(p)) return nullptr;
      node = &(*node)[p];
    } else if (node->is_array()) {
      const std::size_t i = index_value(p);  // past the end when not an index
      if (i >= node->size()) return nullptr;
      node = &(*node)[i];
    } else {
      return nullptr;
    }
  }
  return node;
}
bool Reader::has(const std::string& path) const {
  const Tree* t = find(path);
  return t && !t->is_null();
}

std::string Reader::where(const std::string& path) const {
  if (is_overridden(path)) return "--set " + path;
  // Walk up to the nearest path with a known line.
  std::string p = path;
  while (!p.empty()) {
    auto it = doc_.lines.find(p);
    if (it != doc_.lines.end()) return doc_.file + ":" + std::to_string(it->second) + ": " + path;
    auto cut = p.find_last_of(".[");
    if (cut == std::string::npos) break;
    p = p.substr(0, cut);
  }
  // Not in the file: a --set made it (foo for --set foo.bar=1).
  for (const auto& o : doc_.overridden)
    if (o.rfind(path + ".", 0) == 0 || o.rfind(path + "[", 0) == 0) return "--set " + o + ": " + path;
  return doc_.file + ": " + path;
}

void Reader::record(const std::string& path, const std::string& value, bool present) {
  std::string source = "default";
  if (present) {
    if (is_overridden(path)) {
      source = "--set";
    } else {
      auto it = doc_.lines.find(path);
      source = it != doc_.lines.end() ? "file:" + std::to_string(it->second) : "file";
    }
  }
  settings_.push_back({path, value, source});
}

std::string Reader::str(const std::string& path, const std::string& def,
                        const std::vector<std::string>& choices) {
  const Tree* t = find(path);
  if (!t || t->is_null()) {
    record(path, def, false);
    return def;
  }
  if (!t->is_string()) {
    error(path, "expected a string, got a " + std::string(t->is_array() ? "list" : "map"));
    return def;
  }
  std::string v = t->get<std::string>();
  if (!choices.empty() && std::find(choices.begin(), choices.end(), v) == choices.end()) {
    std::string list;
    for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
    error(path, "\"" + v + "\" is not one of: " + list);
  }
  record(path, v, true);
  return v;
}

std::optional<std::string> Reader::opt_str(const std::string& path) {
  if (!has(path)) return std::nullopt;
  return str(path, "");
}

// Bounds are inclusive unless kOpenLow (then low is excluded).
double Reader::num(const std::string& path, double def, double low, double high, unsigned flags) {
  const bool open_low = flags & kOpenLow, fraction = flags & kFraction;
  const Tree* t = find(path);
  if (!t || t->is_null()) {
    record(path, fmt_double(def), false);
    return def;
  }
  if (!t->is_string()) {
    error(path, "expected a number");
    return def;
  }
  std::string text = t->get<std::string>();
  std::optional<double> v;
  if (fraction) {
    v = parse_fraction(text);
  } else {
    try {
      std::size_t used = 0;
      double d = std::stod(text, &used);
      if (used == text.size()) v = d;
    } catch (...) {
    }
  }
  if (!v || !std::isfinite(*v)) {
    error(path, "\"" + text + "\" is not a number" + std::string(fraction ? " or fraction like 1/256" : ""));
    return def;
  }
  bool below = open_low ? *v <= low : *v < low;
  if (below || *v > high) {
    std::string range = (open_low ? "(" : "[") + fmt_double(low) + ", " + fmt_double(high) + "]";
    if (high == HUGE_VAL) range = (open_low ? "> " : ">= ") + fmt_double(low);
    error(path, text + " is outside " + range);
    return def;
  }
  record(path, text, true);
  return *v;
}

std::int64_t Reader::integer(const std::string& path, std::int64_t def, std::int64_t low, std::int64_t high) {
  const Tree* t = find(path);
  if (!t || t->is_null()) {
    record(path, std::to_string(def), false);
    return def;
  }
  std::string text = t->is_string() ? t->get<std::string>() : "";
  std::int64_t v = 0;
  try {
    std::size_t used = 0;
    v = std::stoll(text, &used);
    if (used != text.size()) throw 1;
  } catch (...) {
    error(path, "\"" + text + "\" is not an integer");
    return def;
  }
  if (v < low || v > high) {
    error(path, text + " is outside [" + std::to_string(low) + ", " +
                    (high == INT64_MAX ? std::string("inf") : std::to_string(high)) + "]");
    return def;
  }
  record(path, text, true);
  return v;
}

bool Reader::boolean(const std::string& path, bool def) {
  const Tree* t = find(path);
  if (!t || t->is_null()) {
    record(path, def ? "true" : "false", false);
    return def;
  }
  std::string s = t->is_string() ? t->get<std::string>() : "";
  static const std::set<std::string> yes = {"true", "True", "TRUE", "yes", "on", "1"};
  static const std::set<std::string> no = {"false", "False", "FALSE", "no", "off", "0"};
  if (yes.count(s)) {
    record(path, "true", true);
    return true;
  }
  if (no.count(s)) {
    record(path, "false", true);
    return false;
  }
  error(path, "\"" + s + "\" is not a boolean (true/false)");
  return def;
}

// Reports keys of the map at `path` that are not in `allowed`.
void Reader::check_keys(const std::string& path, const std::vector<std::string>& allowed) {
  const Tree* t = path.empty() ? &doc_.root : find(path);
  if (!t || t->is_null()) return;
  if (!t->is_object()) {
    error(path, "expected a map");
    return;
  }
  for (auto it = t->begin(); it != t->end(); ++it) {
    const std::string& k = it.key();
    if (std::find(allowed.begin(), allowed.end(), k) != allowed.end()) continue;
    std::string hint;
    std::size_t best = 3;
    for (const auto& a : allowed) {
      std::size_t d = edit_distance(k, a);
      if (d < best) {
        best = d;
        hint = "; did you mean \"" + a + "\"?";
      }
    }
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    error(path.empty() ? k : path + "." + k,
          "unknown key" + (hint.empty() ? " (expected one of: " + list + ")" : hint));
  }
}

bool Reader::is_overridden(const std::string& path) const {
  for (const auto& o : doc_.overridden)
    if (path == o || path.rfind(o + ".", 0) == 0 || path.rfind(o + "[", 0) == 0) return true;
  return false;
}

nlohmann::json scalar_json(const Tree& t) {
  if (t.is_string()) {
    const std::string& s = t.get_ref<const std::string&>();
    try {
      return nlohmann::json::parse(s);
    } catch (const nlohmann::json::exception&) {
      return s;
    }
  }
  if (t.is_object()) {
    nlohmann::json o = nlohmann::json::object();
    for (auto it = t.begin(); it != t.end(); ++it) o[it.key()] = scalar_json(it.value());
    return o;
  }
  if (t.is_array()) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& x : t) a.push_back(scalar_json(x));
    return a;
  }
  return nullptr;
}

}  // namespace sft::config
