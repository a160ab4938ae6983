// Batched generation for the evaluator: every prompt of a benchmark generated in batches of
// one temperature and similar length, each sized to the model's context and to the memory
// free on its device, round-robin over the ranks of a job.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <numeric>

#include "evaluator_internal.h"
#include "sft/model/generate.h"
#include "sft/util/cuda.h"
#include "sft/util/hash.h"
#include "sft/util/log.h"

namespace sft::eval {
namespace {

using Clock = std::chrono::steady_clock;

// Memory the generation may take on the model's device (half of what is free: the rest is
// the allocator's and the model's working room). On a GPU, CUDA's free memory plus what the
// caching allocator holds unused; on the CPU, MemAvailable.
double free_bytes(c10::Device device) {
  if (device.is_cuda()) {
    const auto st = cuda::memory_stats(device.index());
    return 0.5 * (static_cast<double>(cuda::free_memory(device.index())) +
                  static_cast<double>(st.reserved - st.allocated));
  }
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kb = 0;
  while (in >> key >> kb) {
    if (key == "MemAvailable:") return 0.5 * kb * 1024.0;
    in.ignore(1 << 10, '\n');
  }
  return 1e18;  // unknown: no cap
}

// Prompts that would leave fewer than `reserve` new tokens in the context keep only their
// last tokens. Returns how many were cut.
std::int64_t truncate_prompts(std::vector<GenItem>& items, std::int64_t ctx, std::int64_t reserve) {
  std::int64_t truncated = 0;
  for (auto& it : items) {
    const auto keep = static_cast<std::size_t>(ctx - reserve);
    if (it.prompt.size() > keep) {
      it.prompt.erase(it.prompt.begin(), it.prompt.end() - static_cast<std::ptrdiff_t>(keep));
      ++truncated;
    }
  }
  return truncated;
}

// The items' indices by temperature, then longest prompt first.
std::vector<std::size_t> generation_order(const std::vector<GenItem>& items) {
  std::vector<std::size_t> order(items.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (items[a].temperature != items[b].temperature) return items[a].temperature < items[b].temperature;
    return items[a].prompt.size() > items[b].prompt.size();
  });
  return order;
}

// The memory a batch may take: the budget, or the device's free memory, the smallest over the ranks.
double memory_room(const model::Llama& m, const GenSettings& s) {
  double room = s.memory_budget_bytes > 0 ? s.memory_budget_bytes : free_bytes(m.device());
  if (s.world > 1 && s.all_gather)
    for (const auto& r : s.all_gather(std::to_string(room))) room = std::min(room, std::stod(r));
  return room;
}

struct Batch {
  std::size_t first, end;  // positions in the generation order
  std::int64_t max_new_tokens;
};

// The batches, formed as on one rank (every rank forms the same list): prompts of one
// temperature, longest first, at most `bs` of them, and no more than `room` holds: a batch
// shrinks rather than fail.
std::vector<Batch> form_batches(const model::Llama& m, const std::vector<GenItem>& items,
                                const std::vector<std::size_t>& order, const GenSettings& s, double room,
                                std::size_t bs) {
  const std::int64_t ctx = m.config().max_position_embeddings;
  std::vector<Batch> batches;
  std::size_t shrunk = 0;
  for (std::size_t i = 0; i < order.size();) {
    const auto longest = static_cast<std::int64_t>(items[order[i]].prompt.size());
    const std::int64_t new_tokens = std::max<std::int64_t>(1, std::min(s.max_new_tokens, ctx - longest));
    const auto fits = static_cast<std::size_t>(std::max(
        1.0, std::floor(room / model::generation_bytes_per_row(m.config(), longest + new_tokens,
                                                               m.dtype() == at::kBFloat16 ? 2 : 4))));
    const std::size_t cap = std::min(bs, fits);
    shrunk += cap < bs;
    std::size_t j = i;
    while (j < order.size() && j - i < cap && items[order[j]].temperature == items[order[i]].temperature) ++j;
    batches.push_back({i, j, new_tokens});
    i = j;
  }
  if (shrunk) sft::log::warn("{}: {} batch(es) smaller than {} to fit the memory", s.label, shrunk, bs);
  return batches;
}

// The generation settings of batch `batch_no`, whose prompts have `temperature`.
TextOptions batch_options(const Batch& b, std::size_t batch_no, double temperature, std::size_t size,
                          const GenSettings& s, const std::vector<std::int64_t>& stop_ids) {
  TextOptions o;
  o.gen.max_new_tokens = b.max_new_tokens;
  o.gen.temperature = temperature;
  o.gen.top_k = o.gen.temperature > 0 ? s.top_k : 0;
  o.gen.top_p = o.gen.temperature > 0 ? s.top_p : 1.0;
  o.gen.seed = seed_combine(s.seed, batch_no);
  o.gen.stop_ids = stop_ids;
  o.gen.bf16 = s.bf16;
  o.stop_strings = s.stop_strings;
  o.batch_size = static_cast<std::int64_t>(size);
  return o;
}

// Every rank's outputs (`mine` on this one) into g.out.
void gather_outputs(const nlohmann::json& mine, const GenSettings& s, Generated& g) {
  if (s.world > 1 && s.all_gather)
    for (const auto& theirs : s.all_gather(mine.dump()))
      for (const auto& o : nlohmann::json::parse(theirs))
        g.out[o[0].get<std::size_t>()] = {o[1].get<std::string>(), o[2].get<std::int64_t>(),
                                          o[3].get<std::int64_t>(), o[4].get<std::string>()};
}

}  // namespace

Generated generate_all(const model::Llama& m, const data::Tokenizer& tok, std::vector<GenItem> items,
                       const GenSettings& s) {
  Generated g;
  g.out.resize(items.size());
  const std::int64_t ctx = m.config().max_position_embeddings;
  const std::int64_t reserve = std::max<std::int64_t>(1, std::min(s.max_new_tokens, ctx / 4));
  g.prompts_truncated = truncate_prompts(items, ctx, reserve);
  const std::vector<std::size_t> order = generation_order(items);
  const auto bs = static_cast<std::size_t>(std::max<std::int64_t>(1, s.batch_size));
  std::vector<std::int64_t> stop_ids;
  for (auto id : m.config().eos_token_ids) stop_ids.push_back(id);
  const std::vector<Batch> batches = form_batches(m, items, order, s, memory_room(m, s), bs);
  auto last_log = Clock::now();
  const auto start = last_log;
  std::size_t done = 0;
  nlohmann::json mine = nlohmann::json::array();  // this rank's outputs, for the others
  for (std::size_t batch_no = 0; batch_no < batches.size(); ++batch_no) {
    if (static_cast<int>(batch_no % static_cast<std::size_t>(std::max(1, s.world))) != s.rank) continue;
    const Batch& b = batches[batch_no];
    std::vector<TextRequest> reqs;
    for (std::size_t k = b.first; k < b.end; ++k) reqs.push_back({items[order[k]].prompt});
    auto res = generate_text(
        m, tok, reqs,
        batch_options(b, batch_no, items[order[b.first]].temperature, reqs.size(), s, stop_ids));
    for (std::size_t k = 0; k < res.size(); ++k) {
      const std::size_t at = order[b.first + k];
      if (s.world > 1)
        mine.push_back({at, res[k].text, res[k].prompt_tokens, res[k].new_tokens, res[k].finish_reason});
      g.out[at] = std::move(res[k]);
    }
    done += res.size();
    if (std::chrono::duration<double>(Clock::now() - last_log).count() > 20 && done < order.size()) {
      last_log = Clock::now();
      sft::log::info("{}: {}/{} generated ({:.0f} s)", s.label, done, order.size(),
                     std::chrono::duration<double>(last_log - start).count());
    }
  }
  gather_outputs(mine, s, g);
  return g;
}

}  // namespace sft::eval
