#include "sft/data/data_report.h"

#include <cstdio>

namespace sft::data {

nlohmann::ordered_json data_stats(const config::RunConfig& cfg, const DataPlan& plan,
                                  const StageStream::Datasets& datasets,
                                  const std::vector<std::unique_ptr<StageStream>>& streams) {
  using nlohmann::ordered_json;
  ordered_json out;
  ordered_json ds = ordered_json::object();
  for (std::size_t i = 0; i < cfg.datasets.size(); ++i) {
    const auto& s = datasets[i]->stats();
    ordered_json bad = ordered_json::array();
    for (const auto& b : s.first_bad) bad.push_back({{"where", b.where}, {"reason", b.reason}});
    ds[cfg.datasets[i].name] = {{"file", cfg.datasets[i].path},
                                {"format", config::name(cfg.datasets[i].format)},
                                {"records", s.read},
                                {"read", s.read},
                                {"kept", s.kept},
                                {"bad", s.bad},
                                {"filtered", s.filtered},
                                {"zero_target", s.zero_target},
                                {"truncated", s.truncated},
                                {"too_long", s.too_long},
                                {"trailing_user_turns", s.trailing_user_turns},
                                {"tokens", s.tokens},
                                {"target_tokens", s.trained_tokens},
                                {"first_bad", bad}};
  }
  out["datasets"] = ds;
  ordered_json stages = ordered_json::array();
  for (std::size_t st = 0; st < plan.stages.size(); ++st) {
    ordered_json sources = ordered_json::array();
    std::int64_t samples = 0, tokens = 0, trained_tokens = 0;  // JSON: target_tokens
    for (const auto& src : plan.stages[st].sources) {
      const auto& d = *datasets[src.dataset_index()];
      std::int64_t kept = 0, zero = 0, trunc = 0, too_long = 0, tok = 0, tgt = 0;
      for (std::int64_t r : plan.records_of(src)) {
        switch (d.status(r)) {
          case SampleStatus::kOk:
            ++kept;
            tok += d.length(r);
            tgt += d.trained_tokens(r);
            break;
          case SampleStatus::kZeroTarget: ++zero; break;
          case SampleStatus::kTooLong: ++too_long; break;
        }
        trunc += d.truncated(r) ? 1 : 0;
      }
      kept *= src.repeat();  // samples per epoch, upsampling included
      tok *= src.repeat();
      tgt *= src.repeat();
      sources.push_back({{"dataset", src.dataset_name()},
                         {"replay", src.replay()},
                         {"fraction", src.file_share()},
                         {"records", src.records},
                         {"repeat", src.repeat()},
                         {"samples", kept},
                         {"zero_target", zero},
                         {"truncated", trunc},
                         {"too_long", too_long},
                         {"tokens", tok},
                         {"target_tokens", tgt}});
      samples += kept;
      tokens += tok;
      trained_tokens += tgt;
    }
    const auto& stream = *streams[st];
    stages.push_back({{"name", cfg.stages[st].name},
                      {"epochs", stream.epochs()},
                      {"samples", samples},
                      {"tokens", tokens},
                      {"target_tokens", trained_tokens},
                      {"steps", stream.steps()},
                      {"micro_batches", stream.micro_batches()},
                      {"batching", config::name(cfg.data.batching)},
                      {"packing_efficiency", stream.packing_efficiency()},
                      {"sources", sources}});
  }
  out["stages"] = stages;
  return out;
}

std::string format_data_stats(const nlohmann::ordered_json& s) {
  std::string out;
  char buf[512];
  out += "datasets\n";
  std::snprintf(buf, sizeof buf, "  %-12s %9s %9s %6s %9s %9s %9s %12s %12s\n", "name", "read", "kept", "bad",
                "filtered", "zero-tgt", "truncated", "tokens", "targets");
  out += buf;
  for (auto it = s["datasets"].begin(); it != s["datasets"].end(); ++it) {
    const auto& d = it.value();
    std::snprintf(buf, sizeof buf, "  %-12s %9lld %9lld %6lld %9lld %9lld %9lld %12lld %12lld\n",
                  it.key().c_str(), d["read"].get<long long>(), d["kept"].get<long long>(),
                  d["bad"].get<long long>(), d["filtered"].get<long long>(),
                  d["zero_target"].get<long long>(), d["truncated"].get<long long>(),
                  d["tokens"].get<long long>(), d["target_tokens"].get<long long>());
    out += buf;
    for (const auto& b : d["first_bad"])
      out += "      bad: " + b["where"].get<std::string>() + ": " + b["reason"].get<std::string>() + "\n";
  }
  for (std::size_t i = 0; i < s["stages"].size(); ++i) {
    const auto& st = s["stages"][i];
    std::snprintf(buf, sizeof buf,
                  "stage %zu %s: %lld samples x %d epochs, %lld tokens, %lld targets, %lld steps, "
                  "%s efficiency %.1f%%\n",
                  i + 1, st["name"].get<std::string>().c_str(), st["samples"].get<long long>(),
                  st["epochs"].get<int>(), st["tokens"].get<long long>(),
                  st["target_tokens"].get<long long>(), st["steps"].get<long long>(),
                  st["batching"].get<std::string>().c_str(), 100.0 * st["packing_efficiency"].get<double>());
    out += buf;
    std::snprintf(buf, sizeof buf, "  %-18s %9s %9s %9s %9s %9s %12s %12s\n", "source", "fraction", "records",
                  "samples", "zero-tgt", "truncated", "tokens", "targets");
    out += buf;
    for (const auto& src : st["sources"]) {
      std::string name = src["dataset"].get<std::string>() + (src["replay"].get<bool>() ? " (replay)" : "");
      std::snprintf(buf, sizeof buf, "  %-18s %9.5g %9lld %9lld %9lld %9lld %12lld %12lld\n", name.c_str(),
                    src["fraction"].get<double>(), src["records"].get<long long>(),
                    src["samples"].get<long long>(), src["zero_target"].get<long long>(),
                    src["truncated"].get<long long>(), src["tokens"].get<long long>(),
                    src["target_tokens"].get<long long>());
      out += buf;
    }
  }
  return out;
}

}  // namespace sft::data
