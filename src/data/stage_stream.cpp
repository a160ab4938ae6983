#include "sft/data/stage_stream.h"

#include <algorithm>
#include <map>
#include <utility>

#include "sft/util/error.h"
#include "sft/util/hash.h"
#include "sft/util/rng.h"

namespace sft::data {
namespace {

struct Item {
  SampleRef ref;
  std::int64_t length;
  std::int64_t trained_tokens;
};

// Best-fit-decreasing into bins of `capacity`, using an ordered map of remaining room so
// each placement is O(log bins). Returns bins in creation order.
std::vector<Row> pack_window(std::vector<Item>& items, std::int64_t capacity) {
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.length > b.length; });
  std::vector<Row> bins;
  std::multimap<std::int64_t, std::size_t> room;  // remaining capacity -> bin
  for (const auto& it : items) {
    // Best fit: the fullest bin that still has room (tightest fit keeps big gaps for big items).
    auto pos = room.lower_bound(it.length);
    if (pos == room.end()) {
      bins.push_back({{it.ref}, it.length, it.trained_tokens});
      if (capacity - it.length > 0) room.emplace(capacity - it.length, bins.size() - 1);
    } else {
      std::size_t b = pos->second;
      std::int64_t left = pos->first - it.length;
      room.erase(pos);
      bins[b].samples.push_back(it.ref);
      bins[b].tokens += it.length;
      bins[b].trained_tokens += it.trained_tokens;
      if (left > 0) room.emplace(left, b);
    }
  }
  return bins;
}

// One step of samples (samples_per_step): rows dealt to ranks longest first to the one
// with the fewest tokens, then each rank's rows cut, longest first, into micro-batches of
// at most `token_budget` padded tokens. Returns each rank's micro-batches.
std::vector<std::vector<MicroBatch>> deal_step(std::vector<Item> items, const config::DataSpec& data,
                                               int world, std::int64_t token_budget, int epoch) {
  std::vector<Row> rows;
  if (data.batching == config::Batching::kPack) {
    rows = pack_window(items, data.max_seq_len);
  } else {
    for (const auto& it : items) rows.push_back({{it.ref}, it.length, it.trained_tokens});
  }
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.tokens > b.tokens; });
  std::vector<std::vector<Row>> mine(static_cast<std::size_t>(world));
  std::vector<std::int64_t> load(static_cast<std::size_t>(world), 0);
  for (auto& row : rows) {
    const auto r = static_cast<std::size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    load[r] += row.tokens;
    mine[r].push_back(std::move(row));
  }
  std::vector<std::vector<MicroBatch>> out(static_cast<std::size_t>(world));
  for (std::size_t r = 0; r < mine.size(); ++r) {
    MicroBatch mb;
    mb.epoch = epoch;
    for (auto& row : mine[r]) {  // longest first: a row is never wider than the micro-batch's first
      const std::int64_t width =
          data.batching == config::Batching::kPadMax ? data.max_seq_len : std::max(mb.width, row.tokens);
      if (!mb.rows.empty() && width * static_cast<std::int64_t>(mb.rows.size() + 1) > token_budget) {
        out[r].push_back(std::move(mb));
        mb = MicroBatch();
        mb.epoch = epoch;
      }
      mb.width =
          data.batching == config::Batching::kPadMax ? data.max_seq_len : std::max(mb.width, row.tokens);
      mb.tokens += row.tokens;
      mb.trained_tokens += row.trained_tokens;
      mb.rows.push_back(std::move(row));
    }
    if (!mb.rows.empty()) out[r].push_back(std::move(mb));
  }
  return out;
}

// What shapes a stage's micro-batches, besides its samples.
struct Shape {
  const config::DataSpec& data;
  std::int64_t batch_size, rows_accumulation;
  int world;
  std::int64_t token_budget, samples_per_step;
};

// The stage's trainable samples, in source order: each source's good records, `repeat` times.
std::vector<Item> collect_items(const StageSelection& stage, const DataPlan& plan,
                                const StageStream::Datasets& datasets) {
  std::vector<Item> base;
  for (const auto& src : stage.sources) {
    const auto& ds = *datasets[src.dataset_index()];
    const std::vector<std::int64_t> records = plan.records_of(src);
    for (int copy = 0; copy < src.repeat(); ++copy)
      for (std::int64_t rec : records) {
        if (ds.status(rec) != SampleStatus::kOk) continue;
        base.push_back(
            {{static_cast<std::int32_t>(src.dataset_index()), rec}, ds.length(rec), ds.trained_tokens(rec)});
      }
  }
  return base;
}

// The generator of one epoch's shuffles: seeded by (run seed, stage, epoch).
Rng epoch_rng(std::uint64_t seed, int stage_index, int epoch) {
  return Rng(seed_combine(seed, seed_combine(static_cast<std::uint64_t>(stage_index) + 1000003,
                                             static_cast<std::uint64_t>(epoch))));
}

// samples_per_step: the epoch's samples cut into steps, each dealt to the ranks (deal_step)
// and laid out micro-batch by micro-batch, rank by rank. Records each step's first
// micro-batch (counting from `first_micro`, the stage's micro-batches so far) and A_s.
std::vector<MicroBatch> step_micro_batches(const std::vector<Item>& items, const Shape& s, int epoch,
                                           std::size_t first_micro, std::vector<std::int64_t>& step_begin,
                                           std::vector<std::int64_t>& step_accumulation) {
  std::vector<MicroBatch> epoch_micro;
  const auto samples_per_step = static_cast<std::size_t>(s.samples_per_step);
  for (std::size_t first = 0; first < items.size(); first += samples_per_step) {
    const std::size_t last = std::min(items.size(), first + samples_per_step);
    auto per_rank = deal_step(std::vector<Item>(items.begin() + static_cast<std::ptrdiff_t>(first),
                                                items.begin() + static_cast<std::ptrdiff_t>(last)),
                              s.data, s.world, s.token_budget, epoch);
    std::size_t accumulation = 1;
    for (const auto& m : per_rank) accumulation = std::max(accumulation, m.size());
    step_begin.push_back(static_cast<std::int64_t>(first_micro + epoch_micro.size()));
    step_accumulation.push_back(static_cast<std::int64_t>(accumulation));
    for (std::size_t m = 0; m < accumulation; ++m)
      for (auto& mine : per_rank) {
        MicroBatch mb;  // empty: this rank has no m-th micro-batch in this step
        mb.epoch = epoch;
        epoch_micro.push_back(m < mine.size() ? std::move(mine[m]) : std::move(mb));
      }
  }
  return epoch_micro;
}

// pack: each window of pack_window samples packed best-fit-decreasing (its rows shuffled
// with data.shuffle).
std::vector<Row> packed_rows(const std::vector<Item>& items, const config::DataSpec& data, Rng& rng) {
  std::vector<Row> rows;
  for (std::size_t w = 0; w < items.size(); w += static_cast<std::size_t>(data.pack_window)) {
    std::vector<Item> window(
        items.begin() + static_cast<std::ptrdiff_t>(w),
        items.begin() + static_cast<std::ptrdiff_t>(
                            std::min(items.size(), w + static_cast<std::size_t>(data.pack_window))));
    std::vector<Row> bins = pack_window(window, data.max_seq_len);
    if (data.shuffle) rng.shuffle(bins);  // FFD emits long rows first; mix them
    rows.insert(rows.end(), bins.begin(), bins.end());
  }
  return rows;
}

// pad, pad_max: one sample a row; group_by_length sorts windows of 64 micro-batches longest first.
std::vector<Row> padded_rows(std::vector<Item>& items, const config::DataSpec& data,
                             std::int64_t batch_size) {
  if (data.group_by_length) {
    std::size_t window = static_cast<std::size_t>(batch_size) * 64;
    for (std::size_t w = 0; w < items.size(); w += window) {
      auto b = items.begin() + static_cast<std::ptrdiff_t>(w);
      auto e = items.begin() + static_cast<std::ptrdiff_t>(std::min(items.size(), w + window));
      std::stable_sort(b, e, [](const Item& x, const Item& y) { return x.length > y.length; });
    }
  }
  std::vector<Row> rows;
  for (const auto& it : items) rows.push_back({{it.ref}, it.length, it.trained_tokens});
  return rows;
}

// Rows cut in order into micro-batches of batch_size rows.
std::vector<MicroBatch> cut_rows(const std::vector<Row>& rows, const Shape& s, int epoch) {
  std::vector<MicroBatch> epoch_micro;
  const auto batch_size = static_cast<std::size_t>(s.batch_size);
  for (std::size_t r = 0; r < rows.size(); r += batch_size) {
    MicroBatch mb;
    mb.epoch = epoch;
    for (std::size_t k = r; k < std::min(rows.size(), r + batch_size); ++k) {
      mb.rows.push_back(rows[k]);
      mb.tokens += rows[k].tokens;
      mb.width = std::max(mb.width, rows[k].tokens);
      mb.trained_tokens += rows[k].trained_tokens;
    }
    if (s.data.batching == config::Batching::kPadMax) mb.width = s.data.max_seq_len;
    epoch_micro.push_back(std::move(mb));
  }
  return epoch_micro;
}

// Row batching: the epoch's samples as rows (packed or padded), cut into micro-batches;
// micro-batches grouped by length are shuffled.
std::vector<MicroBatch> row_micro_batches(std::vector<Item>& items, const Shape& s, int epoch, Rng& rng) {
  const config::DataSpec& data = s.data;
  const bool pack = data.batching == config::Batching::kPack;
  const std::vector<Row> rows = pack ? packed_rows(items, data, rng) : padded_rows(items, data, s.batch_size);
  std::vector<MicroBatch> epoch_micro = cut_rows(rows, s, epoch);
  if (!pack && data.group_by_length && data.shuffle) rng.shuffle(epoch_micro);
  return epoch_micro;
}

// A hash of every micro-batch's samples in stream order, then of the batching settings.
std::string stream_fingerprint(const std::vector<MicroBatch>& micro, const Shape& s) {
  Sha256 fp;
  for (const auto& mb : micro)
    for (const auto& row : mb.rows) {
      for (const auto& sample : row.samples) {
        std::int64_t v[2] = {sample.dataset, sample.record};
        fp.update(v, sizeof v);
      }
      std::int64_t sep = -1;
      fp.update(&sep, sizeof sep);
    }
  std::int64_t cfg[6] = {s.batch_size,       s.rows_accumulation, s.world,
                         s.data.max_seq_len, s.samples_per_step,  s.token_budget};
  // Row-batched streams hash what they always hashed (their checkpoints stay resumable).
  fp.update(cfg, s.samples_per_step > 0 ? sizeof cfg : 4 * sizeof(std::int64_t));
  return fp.hex_digest();
}

}  // namespace

std::int64_t micro_batch_token_budget(std::int64_t tokens_per_micro_batch, std::int64_t batch_size,
                                      std::int64_t max_seq_len) {
  return tokens_per_micro_batch > 0 ? tokens_per_micro_batch : batch_size * max_seq_len;
}

std::int64_t step_count(std::int64_t units, std::int64_t per_step) {
  return (units + per_step - 1) / per_step;
}

StageStream::StageStream(const StageSelection& stage, int stage_index, const DataPlan& plan,
                         const Datasets& datasets, const config::DataSpec& data, std::int64_t batch_size,
                         std::int64_t rows_accumulation, int world_size, std::uint64_t seed, int epochs,
                         std::int64_t samples_per_step, std::int64_t tokens_per_micro_batch,
                         std::int64_t min_steps)
    : world_(world_size), rows_accumulation_(rows_accumulation) {
  micro_batches_per_step_ = static_cast<std::int64_t>(world_size) * rows_accumulation;
  const std::int64_t token_budget =
      micro_batch_token_budget(tokens_per_micro_batch, batch_size, data.max_seq_len);
  const Shape shape{data, batch_size, rows_accumulation, world_size, token_budget, samples_per_step};
  const std::vector<Item> base = collect_items(stage, plan, datasets);
  samples_per_epoch_ = static_cast<std::int64_t>(base.size());

  const auto steps_so_far = [&] {
    return samples_per_step > 0
               ? static_cast<std::int64_t>(step_begin_.size())
               : step_count(static_cast<std::int64_t>(micro_.size()), micro_batches_per_step_);
  };
  for (int epoch = 0; epoch < epochs || (!base.empty() && steps_so_far() < min_steps); ++epoch) {
    epochs_ = epoch + 1;
    std::vector<Item> items = base;
    Rng rng = epoch_rng(seed, stage_index, epoch);
    if (data.shuffle) rng.shuffle(items);
    std::vector<MicroBatch> epoch_micro =
        samples_per_step > 0
            ? step_micro_batches(items, shape, epoch, micro_.size(), step_begin_, step_accumulation_)
            : row_micro_batches(items, shape, epoch, rng);
    for (auto& mb : epoch_micro) micro_.push_back(std::move(mb));
  }
  if (samples_per_step == 0) cut_row_steps();
  count_steps();
  fingerprint_ = stream_fingerprint(micro_, shape);
}

// Row batching: W x rows_accumulation micro-batches a step, the last step possibly short.
void StageStream::cut_row_steps() {
  steps_ = step_count(static_cast<std::int64_t>(micro_.size()), micro_batches_per_step_);
  for (std::int64_t st = 0; st < steps_; ++st) {
    step_begin_.push_back(st * micro_batches_per_step_);
    step_accumulation_.push_back(rows_accumulation_);
  }
}

// The totals of the stage and of each step.
void StageStream::count_steps() {
  for (const auto& mb : micro_) {
    tokens_ += mb.tokens;
    trained_tokens_ += mb.trained_tokens;
    padded_ += mb.width * static_cast<std::int64_t>(mb.rows.size());
  }
  steps_ = static_cast<std::int64_t>(step_begin_.size());
  step_trained_tokens_.assign(static_cast<std::size_t>(steps_), 0);
  step_tokens_.assign(static_cast<std::size_t>(steps_), 0);
  step_samples_.assign(static_cast<std::size_t>(steps_), 0);
  for (std::size_t st = 0; st < step_begin_.size(); ++st) {
    const auto end = std::min<std::int64_t>(static_cast<std::int64_t>(micro_.size()),
                                            step_begin_[st] + step_accumulation_[st] * world_);
    for (auto g = static_cast<std::size_t>(step_begin_[st]); g < static_cast<std::size_t>(end); ++g) {
      step_trained_tokens_[st] += micro_[g].trained_tokens;
      step_tokens_[st] += micro_[g].tokens;
      for (const auto& row : micro_[g].rows)
        step_samples_[st] += static_cast<std::int64_t>(row.samples.size());
      if (!micro_[g].rows.empty()) ++micro_batches_;
    }
  }
}

const MicroBatch* StageStream::micro_batch(std::int64_t step, int rank, std::int64_t micro) const {
  if (step < 0 || step >= steps_ || micro < 0 || micro >= step_accumulation_[static_cast<std::size_t>(step)])
    return nullptr;
  const std::int64_t g = step_begin_[static_cast<std::size_t>(step)] + micro * world_ + rank;
  if (g >= static_cast<std::int64_t>(micro_.size()) || micro_[static_cast<std::size_t>(g)].rows.empty())
    return nullptr;
  return &micro_[static_cast<std::size_t>(g)];
}

std::int64_t StageStream::accumulation(std::int64_t step) const {
  return step_accumulation_.at(static_cast<std::size_t>(step));
}
std::int64_t StageStream::step_samples(std::int64_t step) const {
  return step_samples_.at(static_cast<std::size_t>(step));
}

std::int64_t StageStream::step_trained_tokens(std::int64_t step) const {
  return step_trained_tokens_.at(static_cast<std::size_t>(step));
}
std::int64_t StageStream::step_tokens(std::int64_t step) const {
  return step_tokens_.at(static_cast<std::size_t>(step));
}

int StageStream::epoch_at(std::int64_t step) const {
  if (micro_.empty() || step_begin_.empty()) return 0;
  const auto st = static_cast<std::size_t>(std::clamp<std::int64_t>(step, 0, steps_ - 1));
  const std::int64_t g =
      std::min<std::int64_t>(step_begin_[st], static_cast<std::int64_t>(micro_.size()) - 1);
  return micro_[static_cast<std::size_t>(g)].epoch;
}

std::vector<SampleRef> StageStream::all_samples() const {
  std::vector<SampleRef> out;
  for (const auto& mb : micro_)
    for (const auto& row : mb.rows) out.insert(out.end(), row.samples.begin(), row.samples.end());
  return out;
}

}  // namespace sft::data
