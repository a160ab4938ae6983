#include "plan.h"

#include <cmath>
#include <limits>
#include <set>

#include "sft/config/run_config.h"
#include "sft/config/yaml_file.h"
#include "sft/util/error.h"
#include "sft/util/hash.h"

namespace sft::sweep {
namespace {

using Tree = nlohmann::ordered_json;

// "a, b or c": E's names, for a message.
template <class E>
std::string one_of() {
  const auto names = config::choice_names<E>();
  std::string s;
  for (std::size_t i = 0; i < names.size(); ++i)
    s += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return s;
}

struct Reader {
  std::string file;
  [[noreturn]] void fail(const std::string& key, const std::string& msg) const {
    throw ConfigError(file + ": " + key + ": " + msg);
  }
  std::string str(const Tree& t, const std::string& key, const std::string& path, bool required = true,
                  const std::string& fallback = "") const {
    if (!t.is_object() || !t.contains(key) || t[key].is_null()) {
      if (required) fail(path + key, "missing");
      return fallback;
    }
    if (!t[key].is_string()) fail(path + key, "expected a scalar");
    return t[key].get<std::string>();
  }
  double num(const Tree& t, const std::string& key, const std::string& path, double fallback) const {
    const std::string s = str(t, key, path, false);
    if (s.empty()) return fallback;
    const auto v = config::parse_fraction(s);
    if (!v) fail(path + key, "expected a number or a fraction like 1/256, got '" + s + "'");
    return *v;
  }
  // A closed choice: one of E's names (choices.h); `fallback` when not required and absent.
  template <class E>
  E choice(const Tree& t, const std::string& key, const std::string& path, bool required, E fallback,
           const std::string& note = "") const {
    const std::string s = str(t, key, path, required, config::name(fallback));
    const auto v = config::parse_choice<E>(s);
    if (!v) fail(path + key, "expected " + one_of<E>() + note + ", got " + s);
    return *v;
  }
};

// A share as text ("1", "1/16", "0.25") -> its value; "smallest" -> 0; NaN when not one.
double plan_share(const std::string& text) {
  if (text == "smallest") return 0;
  const auto v = config::parse_fraction(text);
  return v && *v > 0 && *v <= 1 ? *v : std::numeric_limits<double>::quiet_NaN();
}

// The top level's keys are the known ones.
void check_top_keys(const Reader& r, const Tree& root) {
  if (!root.is_object()) r.fail("(top)", "an analysis plan is a map (version, claims, ...)");
  for (auto it = root.begin(); it != root.end(); ++it)
    if (!std::set<std::string>{"version", "paper", "metric", "alpha", "delta_aic", "bootstrap", "claims"}
             .count(it.key()))
      r.fail(it.key(), "unknown key (expected version, paper, metric, alpha, delta_aic, bootstrap, claims)");
}

// bootstrap: resamples and seed, into the plan.
void read_bootstrap(const Reader& r, const Tree& b, Plan& p) {
  const double n = r.num(b, "resamples", "bootstrap.", 2000), seed = r.num(b, "seed", "bootstrap.", 29);
  if (!(n >= 100 && n <= 1e6 && n == std::floor(n))) r.fail("bootstrap.resamples", "expected 100 .. 1000000");
  if (!(seed >= 0 && seed == std::floor(seed))) r.fail("bootstrap.seed", "expected a whole number >= 0");
  p.resamples = static_cast<int>(n);
  p.bootstrap_seed = static_cast<std::uint64_t>(seed);
}

// A difference row's run sets a and b.
void read_run_sets(const Reader& r, const Tree& t, const std::string& rat, PlanRow& row) {
  row.a = r.choice(t, "a", rat, true, config::RunSet::kAlone);
  row.b = r.choice(t, "b", rat, true, config::RunSet::kAlone);
}

// One row at `rat` (claims[i].rows[j].); its id joins `ids`, which must not hold it yet.
PlanRow read_row(const Reader& r, const Tree& t, const std::string& rat, const std::string& default_metric,
                 std::set<std::string>& ids) {
  PlanRow row;
  row.id = r.str(t, "id", rat);
  if (!ids.insert(row.id).second) r.fail(rat + "id", "duplicate id " + row.id);
  row.ability = r.str(t, "ability", rat);
  row.metric = r.str(t, "metric", rat, false, default_metric);
  if (row.metric.empty() ||
      row.metric.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_@") != std::string::npos)
    r.fail(rat + "metric", "expected score or an eval summary field name, got '" + row.metric + "'");
  row.test = r.choice(t, "test", rat, true, config::PlanTest::kDifference);
  if (row.test == config::PlanTest::kDifference) read_run_sets(r, t, rat, row);
  if (row.test == config::PlanTest::kSaturation) row.against = r.str(t, "against", rat);
  const std::string share = r.str(t, "share", rat, false, "1");
  row.share = plan_share(share);
  if (std::isnan(row.share))
    r.fail(rat + "share", "expected 1, smallest or a fraction in (0, 1], got " + share);
  if (row.test == config::PlanTest::kSaturation && row.share == 0)
    r.fail(rat + "share", "saturation needs a fixed share");
  row.k = r.num(t, "k", rat, 1.0 / 256);
  row.side = r.choice(t, "side", rat, row.test != config::PlanTest::kLogLinear, config::Side::kAbove);
  row.threshold = r.num(t, "threshold", rat, 0);
  if (t.contains("paper")) {
    if (!t["paper"].is_array()) r.fail(rat + "paper", "expected a list of figure ids");
    for (const auto& id : t["paper"]) row.paper.push_back(id.is_string() ? id.get<std::string>() : "");
  }
  return row;
}

// One claim at `at` (claims[i].) with its rows; its id and its rows' join `ids`.
PlanClaim read_claim(const Reader& r, const Tree& c, const std::string& at, const std::string& default_metric,
                     std::set<std::string>& ids) {
  PlanClaim claim;
  claim.id = r.str(c, "id", at);
  claim.claim = r.str(c, "claim", at);
  claim.combine = r.choice(c, "combine", at, false, config::Combine::kAll, " (the whole claim's verdict)");
  if (!ids.insert(claim.id).second) r.fail(at + "id", "duplicate id " + claim.id);
  if (!c.contains("rows") || !c["rows"].is_array() || c["rows"].empty())
    r.fail(at + "rows", "expected a list");
  for (std::size_t j = 0; j < c["rows"].size(); ++j)
    claim.rows.push_back(
        read_row(r, c["rows"][j], at + "rows[" + std::to_string(j) + "].", default_metric, ids));
  return claim;
}

}  // namespace

Plan load_plan(const std::string& path) {
  const Reader r{path};
  const Tree root = config::read_yaml_as_json(path);
  check_top_keys(r, root);
  Plan p;
  p.file = path;
  p.sha256 = sha256_file(path);
  p.version = r.str(root, "version", "");
  p.paper = r.str(root, "paper", "");
  p.metric = r.str(root, "metric", "", false, kScoreMetric);
  if (p.metric != kScoreMetric)
    r.fail("metric", "expected score (each ability's final eval score), got " + p.metric);
  p.alpha = r.num(root, "alpha", "", 0.05);
  if (!(p.alpha > 0 && p.alpha < 1)) r.fail("alpha", "expected a level in (0, 1)");
  p.delta_aic = r.num(root, "delta_aic", "", 2);
  if (root.contains("bootstrap")) read_bootstrap(r, root["bootstrap"], p);
  if (!root.contains("claims") || !root["claims"].is_array() || root["claims"].empty())
    r.fail("claims", "expected a list of claims");
  std::set<std::string> ids;
  for (std::size_t i = 0; i < root["claims"].size(); ++i)
    p.claims.push_back(read_claim(r, root["claims"][i], "claims[" + std::to_string(i) + "].", p.metric, ids));
  return p;
}

std::optional<config::Strategy> strategy_of(config::RunSet set) {
  using config::RunSet, config::Strategy;
  switch (set) {
    case RunSet::kAlone:
    case RunSet::kMixed: return std::nullopt;
    case RunSet::kMultiTask: return Strategy::kMultiTask;
    case RunSet::kSequential: return Strategy::kSequential;
    case RunSet::kMixedSequential: return Strategy::kMixedSequential;
    case RunSet::kDmt: return Strategy::kDmt;
  }
  return std::nullopt;
}

}  // namespace sft::sweep
