#include "sft/data/run_data.h"

#include <unistd.h>

#include <algorithm>

#include "sft/data/readers.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"
#include "sft/util/log.h"
#include "sft/util/safe_io.h"

namespace sft::data {
namespace {

// The cache folders one build wrote, removed again when the build is refused further on (a
// later dataset with a malformed record, a fraction that selects nothing): a refused run
// leaves no cache entries behind, nor the cache folder when it made it.
class CacheRollback {
 public:
  explicit CacheRollback(std::string root) : root_(std::move(root)), root_existed_(fs::exists(root_)) {}
  CacheRollback(const CacheRollback&) = delete;
  CacheRollback& operator=(const CacheRollback&) = delete;
  void wrote(const std::string& dir) { dirs_.push_back(dir); }
  void keep() { kept_ = true; }
  ~CacheRollback() {
    if (kept_) return;
    for (const auto& d : dirs_) {
      try {
        fs::remove_all(d);
      } catch (const std::exception& e) {
        sft::log::warn("{}: could not remove this refused run's cache entry: {}", d, e.what());
      }
    }
    if (!root_existed_) ::rmdir(root_.c_str());  // only when empty: another run may have written there
  }

 private:
  std::string root_;
  bool root_existed_;
  bool kept_ = false;
  std::vector<std::string> dirs_;
};

}  // namespace

RunData build_run_data(const config::RunConfig& cfg, int world_size) {
  RunData rd;
  rd.tokenizer = Tokenizer::load(cfg.tokenizer);
  // Every dataset file is there before any is tokenized into the cache: a typo in the last
  // one leaves no cache entries of the others behind.
  for (const auto& d : cfg.datasets) {
    if (!fs::exists(d.path))
      throw DataError(d.path + ": dataset file not found (datasets." + d.name + ".path)");
    fs::require_regular_file(d.path, "datasets." + d.name + ".path");
  }
  rd.chat_template = ChatTemplate::create(cfg.chat_template, cfg.system_message, rd.tokenizer.get());
  rd.chat_template.check_tokenizer(*rd.tokenizer);
  if (cfg.chat_template == config::Template::kAuto)
    sft::log::info("template: auto: {} is {}", rd.tokenizer->chat_template_path(), rd.chat_template.name());
  std::vector<std::int64_t> counts;
  CacheRollback rollback(cfg.data.cache_dir);
  for (const auto& d : cfg.datasets) {
    bool rebuilt = false;
    ChatTemplate tmpl = template_for(cfg, d, *rd.tokenizer);
    auto ds = prepare_dataset(d, cfg.data, *rd.tokenizer, tmpl, &rebuilt);
    if (rebuilt) {
      rollback.wrote(ds->dir());
      sft::log::info("data: prepared {} ({} records) into {}", d.name, ds->size(), ds->dir());
    }
    if (ds->size() == 0) {
      // Say why (every record bad under on_bad_record: skip, or filtered out), with the
      // reasons, rather than let the fraction report "1 of 0 records selects none".
      const auto& st = ds->stats();
      std::string why = "datasets." + d.name + ": no usable record in " + d.path + " (" +
                        std::to_string(st.read) + " read: " + std::to_string(st.bad) +
                        " bad and skipped under data.on_bad_record: skip, " + std::to_string(st.filtered) +
                        " filtered out)";
      for (const auto& b : st.first_bad) why += "\n  bad: " + b.where + ": " + b.reason;
      if (st.bad > static_cast<std::int64_t>(st.first_bad.size()))
        why += "\n  ... and " + std::to_string(st.bad - static_cast<std::int64_t>(st.first_bad.size())) +
               " more";
      throw DataError(why);
    }
    counts.push_back(ds->size());
    rd.datasets.push_back(ds);
    rd.rebuilt.push_back(rebuilt);
  }
  rd.plan = plan_data(cfg, counts);
  for (std::size_t s = 0; s < rd.plan.stages.size(); ++s) {
    const auto& sel = rd.plan.stages[s];
    rd.streams.push_back(std::make_unique<StageStream>(
        sel, static_cast<int>(s), rd.plan, rd.datasets, cfg.data, cfg.train.batch_size,
        rows_accumulation(cfg, world_size), world_size, cfg.data_seed(), sel.stage->epochs,
        cfg.train.samples_per_step, cfg.train.tokens_per_micro_batch, sel.stage->min_steps));
  }
  rollback.keep();
  return rd;
}

std::int64_t rows_accumulation(const config::RunConfig& cfg, int world_size) {
  const auto& t = cfg.train;
  if (t.rows_per_step <= 0) return t.grad_accum;
  const std::int64_t per_micro = t.batch_size * world_size;
  if (t.rows_per_step % per_micro != 0)
    throw ConfigError(
        "train.rows_per_step: " + std::to_string(t.rows_per_step) +
        " rows per optimizer step cannot be "
        "kept on " +
        std::to_string(world_size) + " ranks with micro-batches of train.batch_size " +
        std::to_string(t.batch_size) + " rows (" + std::to_string(t.rows_per_step) + " / (" +
        std::to_string(t.batch_size) + " x " + std::to_string(world_size) +
        ") is not a whole number); launch on a world size that divides it, or change train.batch_size");
  return t.rows_per_step / per_micro;
}

std::string describe_global_batch(const config::RunConfig& cfg, int world_size) {
  const auto& t = cfg.train;
  if (t.samples_per_step > 0)
    return std::to_string(t.samples_per_step) + " samples per optimizer step (train.samples_per_step), on " +
           std::to_string(world_size) + " rank(s) in micro-batches of at most " +
           std::to_string(micro_batch_token_budget(cfg)) + " tokens, as many as each step needs";
  const std::int64_t a = rows_accumulation(cfg, world_size);
  std::string s = std::to_string(t.batch_size * a * world_size) +
                  " rows per optimizer step = " + std::to_string(t.batch_size) + " rows x " +
                  std::to_string(a) + " micro-batches x " + std::to_string(world_size) + " rank(s)";
  if (t.rows_per_step > 0)
    s += " (train.rows_per_step, kept on any world size that divides it)";
  else if (cfg.dist.gpus > 0 && cfg.dist.gpus != world_size)
    s += "; NOTE: on dist.gpus " + std::to_string(cfg.dist.gpus) + " ranks it would be " +
         std::to_string(t.batch_size * t.grad_accum * cfg.dist.gpus) +
         " rows: state train.rows_per_step (or train.samples_per_step) to keep the global batch whatever the "
         "world size";
  return s;
}

DataPlan plan_without_tokenizing(const config::RunConfig& cfg) {
  std::vector<std::int64_t> counts;
  std::vector<bool> estimated;
  for (const auto& d : cfg.datasets) {
    if (!fs::exists(d.path) && d.size >= 0) {
      counts.push_back(d.size);
      estimated.push_back(true);
      continue;
    }
    counts.push_back(static_cast<std::int64_t>(
        read_dataset(d, cfg.data.on_bad_record, false, cfg.data.max_record_bytes).records.size()));
    estimated.push_back(false);
  }
  return plan_data(cfg, counts, estimated);
}

nlohmann::json expand_json(const config::RunConfig& cfg, const DataPlan& plan) {
  using nlohmann::json;
  json j = cfg.to_json();
  for (std::size_t i = 0; i < cfg.datasets.size(); ++i) {
    auto& d = j["datasets"][cfg.datasets[i].name];
    d["records"] = plan.dataset_records[i];
    d["selected"] = plan.dataset_selected[i];
    if (plan.dataset_size_estimated[i]) d["records_estimated"] = true;
  }
  for (std::size_t s = 0; s < plan.stages.size(); ++s) {
    auto& st = j["stages"][s];
    json sources = json::array();
    for (const auto& src : plan.stages[s].sources)
      sources.push_back({{"dataset", src.dataset_name()},
                         {"fraction", src.file_share()},
                         {"samples", src.samples()},
                         {"records", src.records},
                         {"repeat", src.repeat()},
                         {"replay", src.replay()},
                         {"source_fraction", src.source->share}});
    st["sources"] = sources;
    st["samples"] = plan.stages[s].samples;
  }
  return j;
}

nlohmann::json data_manifest(const config::RunConfig& cfg, const RunData& rd) {
  using nlohmann::json;
  json stages = json::array();
  for (std::size_t s = 0; s < rd.plan.stages.size(); ++s) {
    json sources = json::array();
    for (const auto& src : rd.plan.stages[s].sources) {
      const auto& ds = *rd.datasets[src.dataset_index()];
      json ids = json::array(), excluded = json::array();
      for (std::int64_t r : rd.plan.records_of(src)) {
        (ds.status(r) == SampleStatus::kOk ? ids : excluded).push_back(ds.origin(r).id);
      }
      sources.push_back({{"dataset", src.dataset_name()},
                         {"replay", src.replay()},
                         {"fraction", src.file_share()},
                         {"records", ids},
                         {"excluded", excluded}});
    }
    // Per optimizer step: how many samples, and a digest of which ("<dataset>:<index in its
    // file>", sorted), so
    // that two runs can be shown to put the same samples in every step.
    const auto& stream = *rd.streams[s];
    json counts = json::array(), digests = json::array();
    for (std::int64_t step = 0; step < stream.steps(); ++step) {
      std::vector<std::string> ids;
      for (std::int64_t m = 0; m < stream.accumulation(step); ++m)
        for (int r = 0; r < stream.world_size(); ++r)
          if (const MicroBatch* mb = stream.micro_batch(step, r, m))
            for (const auto& row : mb->rows)
              for (const auto& x : row.samples)
                ids.push_back(
                    cfg.datasets[static_cast<std::size_t>(x.dataset)].name + ":" +
                    std::to_string(rd.datasets[static_cast<std::size_t>(x.dataset)]->origin(x.record).index));
      std::sort(ids.begin(), ids.end());
      Sha256 h;
      for (const auto& id : ids) h.update(id.data(), id.size() + 1);  // with the terminating NUL as separator
      counts.push_back(ids.size());
      digests.push_back(h.hex_digest().substr(0, 16));
    }
    stages.push_back({{"stage", cfg.stages[s].name},
                      {"sources", sources},
                      {"stream_fingerprint", stream.fingerprint()},
                      {"step_samples", counts},
                      {"step_sample_digests", digests}});
  }
  return {{"seed", cfg.data_seed()}, {"stages", stages}};
}

}  // namespace sft::data
