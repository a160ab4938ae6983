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

const std::set<std::string> kRunSets = {"alone", "mixed", "multi_task", "sequential", "mixed_sequential",
                                        "dmt"};
const std::set<std::string> kTests = {"difference", "log_linear", "saturation"};

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
};

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
  row.a = r.str(t, "a", rat);
  row.b = r.str(t, "b", rat);
  for (const auto* s : {&row.a, &row.b})
    if (!kRunSets.count(*s))
      r.fail(rat + (s == &row.a ? "a" : "b"),
             "expected alone, mixed, multi_task, sequential, mixed_sequential or dmt, got " + *s);
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
  row.test = r.str(t, "test", rat);
  if (!kTests.count(row.test)) r.fail(rat + "test", "expected difference, log_linear or saturation");
  if (row.test == "difference") read_run_sets(r, t, rat, row);
  if (row.test == "saturation") row.against = r.str(t, "against", rat);
  row.share = r.str(t, "share", rat, false, "1");
  if (std::isnan(plan_share(row.share)))
    r.fail(rat + "share", "expected 1, smallest or a fraction in (0, 1], got " + row.share);
  if (row.test == "saturation" && plan_share(row.share) == 0)
    r.fail(rat + "share", "saturation needs a fixed share");
  row.k = r.num(t, "k", rat, 1.0 / 256);
  row.side = r.str(t, "side", rat, row.test != "log_linear", "above");
  if (row.side != "above" && row.side != "below") r.fail(rat + "side", "expected above or below");
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
  claim.combine = r.str(c, "combine", at, false, "all");
  if (claim.combine != "all") r.fail(at + "combine", "expected all (the whole claim's verdict)");
  if (!ids.insert(claim.id).second) r.fail(at + "id", "duplicate id " + claim.id);
  if (!c.contains("rows") || !c["rows"].is_array() || c["rows"].empty())
    r.fail(at + "rows", "expected a list");
  for (std::size_t j = 0; j < c["rows"].size(); ++j)
    claim.rows.push_back(
        read_row(r, c["rows"][j], at + "rows[" + std::to_string(j) + "].", default_metric, ids));
  return claim;
}

}  // namespace

double plan_share(const std::string& text) {
  if (text == "smallest") return 0;
  const auto v = config::parse_fraction(text);
  return v && *v > 0 && *v <= 1 ? *v : std::numeric_limits<double>::quiet_NaN();
}

Plan load_plan(const std::string& path) {
  const Reader r{path};
  const Tree root = config::read_yaml_as_json(path);
  check_top_keys(r, root);
  Plan p;
  p.file = path;
  p.sha256 = sha256_file(path);
  p.version = r.str(root, "version", "");
  p.paper = r.str(root, "paper", "");
  p.metric = r.str(root, "metric", "", false, "score");
  if (p.metric != "score")
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

}  // namespace sft::sweep
