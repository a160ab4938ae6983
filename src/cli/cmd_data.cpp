// sft data prepare | stats | render | inspect: look at what a run will train on.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "sft/config/run_config.h"
#include "sft/data/chat_template.h"
#include "sft/data/data_report.h"
#include "sft/data/readers.h"
#include "sft/data/tokenizer.h"
#include "sft/data/run_data.h"
#include "sft/util/error.h"
#include "sft/util/log.h"

namespace sft::cli {
namespace {

using nlohmann::ordered_json;

struct DataArgs {
  std::string config;
  std::vector<std::string> sets;
  bool json = false;
  // render
  std::string format, tmpl = "vicuna_v1.1", file, tokenizer, id, filter, system;
  std::int64_t index = -1;
  bool generation = false, strip_calculator = false, skip_bad = false;
  // inspect
  std::string stage;
};
DataArgs A;

ordered_json origin_json(const data::Origin& o) {
  return {{"file", o.file}, {"line", o.line}, {"index", o.index}, {"id", o.id}};
}

// Text with trained spans made visible: green on a terminal, ⟦...⟧ otherwise.
std::string marked_text(const std::vector<data::Segment>& segs, bool tty) {
  std::string out;
  for (const auto& s : segs) {
    if (s.trained)
      out += tty ? "\033[32m" + s.text + "\033[0m" : "\u27e6" + s.text + "\u27e7";
    else
      out += s.text;
  }
  return out;
}

void print_tokens(const data::Tokenizer& tok, const data::Encoded& e, std::size_t limit, bool tty) {
  std::printf("  %6s %7s  %s\n", "pos", "id", "piece (T = trained target)");
  for (std::size_t i = 0; i < e.ids.size() && i < limit; ++i) {
    std::string piece = tok.piece(e.ids[i]);
    bool t = e.trained[i] != 0;
    if (tty && t)
      std::printf("  %6zu %7d  \033[32m%-24s T\033[0m\n", i, e.ids[i], piece.c_str());
    else
      std::printf("  %6zu %7d  %-24s %s\n", i, e.ids[i], piece.c_str(), t ? "T" : "");
  }
}

int run_prepare() {
  config::RunConfig cfg = config::load_run_config(A.config, A.sets);
  auto start = std::chrono::steady_clock::now();
  data::RunData rd = data::build_run_data(cfg, 1);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::int64_t tokens = 0;
  ordered_json out = ordered_json::array();
  for (std::size_t i = 0; i < cfg.datasets.size(); ++i) {
    const auto& d = *rd.datasets[i];
    tokens += d.stats().tokens;
    out.push_back({{"dataset", cfg.datasets[i].name},
                   {"records", d.size()},
                   {"tokens", d.stats().tokens},
                   {"cache", d.dir()},
                   {"rebuilt", static_cast<bool>(rd.rebuilt[i])}});
  }
  if (A.json) {
    std::cout << ordered_json{{"datasets", out}, {"seconds", secs}}.dump() << "\n";
  } else {
    for (const auto& d : out)
      std::printf("%-12s %8lld records %10lld tokens  %s %s\n", d["dataset"].get<std::string>().c_str(),
                  d["records"].get<long long>(), d["tokens"].get<long long>(),
                  d["rebuilt"].get<bool>() ? "built " : "cached", d["cache"].get<std::string>().c_str());
    std::printf("%lld tokens in %.2f s (%.0f tokens/s)\n", static_cast<long long>(tokens), secs,
                secs > 0 ? static_cast<double>(tokens) / secs : 0.0);
  }
  return 0;
}

int run_stats() {
  config::RunConfig cfg = config::load_run_config(A.config, A.sets);
  data::RunData rd = data::build_run_data(cfg, 1);
  auto stats = data::data_stats(cfg, rd.plan, rd.datasets, rd.streams);
  if (A.json)
    std::cout << stats.dump(2) << "\n";
  else
    std::cout << data::format_data_stats(stats);
  return 0;
}

int run_render() {
  config::DatasetSpec spec;
  spec.name = "render";
  spec.path = A.file;
  spec.format = *config::parse_choice<config::Format>(A.format);  // checked by --format
  spec.strip_calculator = A.strip_calculator;
  if (!A.filter.empty()) {
    auto eq = A.filter.find('=');
    if (eq == std::string::npos) throw ConfigError("--filter: expected FIELD=VALUE (e.g. label=true)");
    spec.filter_field = A.filter.substr(0, eq);
    std::string v = A.filter.substr(eq + 1);
    try {
      spec.filter_equals = nlohmann::json::parse(v);
    } catch (...) {
      spec.filter_equals = v;
    }
  }
  std::shared_ptr<const data::Tokenizer> tok;
  if (!A.tokenizer.empty()) tok = data::Tokenizer::load(A.tokenizer);
  auto tmpl = data::ChatTemplate::create(
      A.tmpl, A.system.empty() ? std::nullopt : std::optional<std::string>(A.system), tok.get());
  if (tok) tmpl.check_tokenizer(*tok);
  // Unanswered last user turns are kept: --generation renders their prompts.
  data::ReadResult rr = data::read_dataset(
      spec, A.skip_bad ? config::OnBadRecord::kSkip : config::OnBadRecord::kError, /*keep_unanswered=*/true);
  for (const auto& b : rr.bad) sft::log::warn("skipped bad record {}: {}", b.where, b.reason);
  bool found = false;
  std::int64_t unanswered = 0;
  for (std::size_t i = 0; i < rr.records.size(); ++i) {
    const data::Record& r = rr.records[i];
    if (A.index >= 0 && r.origin.index != A.index) continue;
    if (!A.id.empty() && r.origin.id != A.id) continue;
    found = true;
    std::vector<data::Segment> segs;
    if (A.generation && !r.is_text) {
      // A conversation ending with the user's turn: the prompt for its answer (all of it).
      segs =
          data::ChatTemplate::awaits_answer(r) ? tmpl.generation_segments(r) : tmpl.generation_segments(r, 0);
    } else {
      // Training render: the unanswered last turn is not part of the sample, and a
      // conversation with no answer at all has no sample.
      if (data::ChatTemplate::awaits_answer(r)) ++unanswered;
      try {
        segs = tmpl.segments(r);
      } catch (const DataError& e) {
        if (!A.skip_bad || A.index >= 0 || !A.id.empty()) throw;
        sft::log::warn("skipped record: {}", e.what());
        continue;
      }
    }
    std::string text = data::ChatTemplate::join(segs);
    if (A.json) {
      ordered_json j = {
          {"index", r.origin.index}, {"id", r.origin.id}, {"origin", origin_json(r.origin)}, {"text", text}};
      if (tok) {
        data::Encoded e = data::ChatTemplate::encode(segs, *tok);
        j["ids"] = e.ids;
        j["mask"] = e.trained;  // the JSON's name for the trained flags
      }
      std::cout << j.dump() << "\n";
    } else if (A.index >= 0 || !A.id.empty()) {
      std::cout << text << "\n";
    } else {
      std::cout << "### record " << r.origin.index << " (" << r.origin.id << ") " << r.origin.where() << "\n"
                << text << "\n\n";
    }
  }
  if (!found && (A.index >= 0 || !A.id.empty()))
    throw DataError(A.file + ": no record with " +
                    (A.index >= 0 ? "index " + std::to_string(A.index) : "id " + A.id));
  if (unanswered > 0)
    sft::log::info(
        "{} conversation(s) end with an unanswered user turn, left out of the training render; "
        "--generation renders the prompt for it",
        unanswered);
  return 0;
}

// The template's Jinja form (what exported folders carry), or with --json its facts.
int run_template() {
  std::shared_ptr<const data::Tokenizer> tok;
  if (!A.tokenizer.empty()) tok = data::Tokenizer::load(A.tokenizer);
  auto tmpl = data::ChatTemplate::create(
      A.tmpl, A.system.empty() ? std::nullopt : std::optional<std::string>(A.system), tok.get());
  if (tok) tmpl.check_tokenizer(*tok);
  if (!A.json) {
    std::cout << tmpl.jinja();
    return 0;
  }
  ordered_json j = {
      {"name", tmpl.name()},
      {"system_message", tmpl.has_default_system() ? ordered_json(tmpl.default_system()) : ordered_json()},
      {"required_tokens", tmpl.required_tokens()},
      {"stop_strings", tmpl.stop_strings()},
      {"jinja", tmpl.jinja()}};
  if (tok && !tok->chat_template().empty())
    j["folder_template"] = {{"file", tok->chat_template_path()},
                            {"fingerprint", data::ChatTemplate::fingerprint(tok->chat_template())}};
  std::cout << j.dump() << "\n";
  return 0;
}

// --stage as an index into cfg.stages: a stage's name or its 1-based number; the first stage without it.
std::size_t chosen_stage(const config::RunConfig& cfg) {
  std::size_t stage = 0;
  if (A.stage.empty()) return stage;
  bool ok = false;
  for (std::size_t s = 0; s < cfg.stages.size(); ++s)
    if (cfg.stages[s].name == A.stage || std::to_string(s + 1) == A.stage) {
      stage = s;
      ok = true;
    }
  if (!ok) throw ConfigError("--stage: no stage \"" + A.stage + "\" (give a name or a 1-based number)");
  return stage;
}

// One sample of a stage: its dataset, its record there, and whether it is replay.
struct Item {
  std::size_t ds;
  std::int64_t rec;
  bool replay;
};

// The stage's samples in plan order: sources in order, each in permutation order.
std::vector<Item> stage_samples(const data::RunData& rd, std::size_t stage) {
  std::vector<Item> items;
  for (const auto& src : rd.plan.stages[stage].sources)
    for (std::int64_t r : rd.plan.records_of(src)) items.push_back({src.dataset_index(), r, src.replay()});
  return items;
}

// The samples --id or --index picks (the first sample without either); ConfigError when none.
std::vector<std::size_t> chosen_samples(const config::RunConfig& cfg, const data::RunData& rd,
                                        const std::vector<Item>& items, std::size_t stage) {
  std::vector<std::size_t> chosen;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto o = rd.datasets[items[i].ds]->origin(items[i].rec);
    if (!A.id.empty() ? o.id == A.id : (A.index < 0 ? i == 0 : static_cast<std::int64_t>(i) == A.index))
      chosen.push_back(i);
  }
  if (chosen.empty())
    throw ConfigError(std::string("no sample ") +
                      (A.id.empty() ? "at index " + std::to_string(A.index) : "with id " + A.id) +
                      " in stage " + cfg.stages[stage].name + " (" + std::to_string(items.size()) +
                      " samples)");
  return chosen;
}

// The record's rendering, re-read from its file; the cached ids are what training sees.
std::vector<data::Segment> rendered_segments(const config::RunConfig& cfg, const data::RunData& rd,
                                             const config::DatasetSpec& spec, const data::Origin& o) {
  data::ReadResult rr =
      data::read_dataset(spec, cfg.data.on_bad_record, /*keep_unanswered=*/false, cfg.data.max_record_bytes);
  const data::Record* rec = nullptr;
  for (const auto& r : rr.records)
    if (r.origin.index == o.index) rec = &r;
  auto tmpl = data::template_for(cfg, spec, *rd.tokenizer);
  return rec ? tmpl.segments(*rec) : std::vector<data::Segment>{};
}

const char* status_text(data::SampleStatus s) {
  return s == data::SampleStatus::kOk           ? "ok"
         : s == data::SampleStatus::kZeroTarget ? "zero-target (not trained)"
                                                : "too long (dropped)";
}

// Sample i of the stage: as one JSON line, or its origin, text with trained spans, and tokens.
void show_sample(const config::RunConfig& cfg, const data::RunData& rd, std::size_t stage,
                 const std::vector<Item>& items, std::size_t i, bool tty) {
  const Item& it = items[i];
  const auto& ds = *rd.datasets[it.ds];
  const auto& spec = cfg.datasets[it.ds];
  data::Origin o = ds.origin(it.rec);
  std::vector<data::Segment> segs = rendered_segments(cfg, rd, spec, o);
  data::Encoded e;
  e.ids.assign(ds.ids(it.rec), ds.ids(it.rec) + ds.length(it.rec));
  e.trained.assign(ds.trained(it.rec), ds.trained(it.rec) + ds.length(it.rec));
  const char* status = status_text(ds.status(it.rec));
  if (A.json) {
    ordered_json j = {{"stage", cfg.stages[stage].name},
                      {"index", i},
                      {"dataset", spec.name},
                      {"replay", it.replay},
                      {"origin", origin_json(o)},
                      {"text", data::ChatTemplate::join(segs, /*with_bos=*/rd.tokenizer->bos_id() >= 0)},
                      {"ids", e.ids},
                      {"mask", e.trained},
                      {"status", status},
                      {"truncated", ds.truncated(it.rec)}};
    std::cout << j.dump() << "\n";
    return;
  }
  std::int64_t trained = 0;
  for (auto m : e.trained) trained += m;
  std::printf(
      "stage %zu (%s), sample %zu of %zu: %s record %lld%s\n  origin %s (id %s)\n  %zu tokens, %lld "
      "trained, %s%s\n",
      stage + 1, cfg.stages[stage].name.c_str(), i, items.size(), spec.name.c_str(),
      static_cast<long long>(it.rec), it.replay ? " (replay)" : "", o.where().c_str(), o.id.c_str(),
      e.ids.size(), static_cast<long long>(trained), status, ds.truncated(it.rec) ? ", truncated" : "");
  std::printf("text (%s = trained):\n%s\n", tty ? "green" : "\u27e6...\u27e7",
              marked_text(segs, tty).c_str());
  print_tokens(*rd.tokenizer, e, e.ids.size(), tty);
}

int run_inspect() {
  config::RunConfig cfg = config::load_run_config(A.config, A.sets);
  data::RunData rd = data::build_run_data(cfg, 1);
  const std::size_t stage = chosen_stage(cfg);
  const std::vector<Item> items = stage_samples(rd, stage);
  const std::vector<std::size_t> chosen = chosen_samples(cfg, rd, items, stage);
  const bool tty = ::isatty(1);
  for (std::size_t i : chosen) show_sample(cfg, rd, stage, items, i, tty);
  return 0;
}

}  // namespace

std::vector<Command> register_data(CLI::App& app) {
  auto* cmd = app.add_subcommand("data", "prepare, count, render and inspect training data");
  cmd->require_subcommand(1);

  auto* prepare = cmd->add_subcommand("prepare", "tokenize every dataset of a run into the data cache");
  prepare->add_option("--config", A.config, "run configuration (YAML)")->required();
  add_set_option(prepare, A.sets);
  prepare->add_flag("--json", A.json, "print JSON");

  auto* stats = cmd->add_subcommand("stats",
                                    "per dataset, stage and source: records read, kept, bad, zero-target, "
                                    "truncated, samples, tokens, target tokens, packing efficiency");
  stats->add_option("--config", A.config, "run configuration (YAML)")->required();
  add_set_option(stats, A.sets);
  stats->add_flag("--json", A.json, "print JSON");

  auto* render =
      cmd->add_subcommand("render", "render records of one file with one template, without a run config");
  std::vector<std::string> formats;
  for (const auto& c : config::Choices<config::Format>::all) formats.emplace_back(c.name);
  render->add_option("--format", A.format, config::choice_list<config::Format>())
      ->required()
      ->check(CLI::IsMember(formats));
  render->add_option("--template", A.tmpl, "chat template")
      ->check(CLI::IsMember(data::ChatTemplate::names()));
  render->add_option("file", A.file, "dataset file")->required();
  render->add_option(
      "--tokenizer", A.tokenizer,
      "tokenizer.model, tokenizer.json or a folder: adds ids and mask to --json output (template auto: "
      "the folder whose chat template is recognised)");
  auto* idx = render->add_option("--index", A.index, "only the record at this 0-based position in the file")
                  ->check(in_range(0, 1e15));
  render->add_option("--id", A.id, "only the record with this id")->excludes(idx);
  render->add_flag(
      "--generation", A.generation,
      "render the prompt inference feeds: for the last user turn of a conversation that ends with one "
      "(the whole conversation so far), else for the first user turn");
  render->add_flag("--json", A.json, "one JSON object per record: text (+ ids, mask with --tokenizer)");
  render->add_option("--filter", A.filter, "keep records whose FIELD equals VALUE (e.g. label=true)");
  render->add_option("--system", A.system, "system message replacing the template's default");
  render->add_flag("--strip-calculator", A.strip_calculator, "gsm8k: drop <<a+b=c>> annotations");
  render->add_flag("--skip-bad", A.skip_bad, "skip bad records (reported on stderr) instead of failing");

  auto* tmpl = cmd->add_subcommand("template",
                                   "print a chat template as the Jinja chat template exported models carry "
                                   "(--json: its name, system message, special tokens, stop strings)");
  tmpl->add_option("--template", A.tmpl, "chat template (auto: the --tokenizer folder's, recognised)")
      ->check(CLI::IsMember(data::ChatTemplate::names()));
  tmpl->add_option("--system", A.system, "system message replacing the template's default");
  tmpl->add_option("--tokenizer", A.tokenizer,
                   "tokenizer.json, tokenizer.model or a folder: checked to hold the template's "
                   "special tokens; template auto reads its folder's chat template");
  tmpl->add_flag("--json", A.json, "print JSON");

  auto* inspect = cmd->add_subcommand(
      "inspect", "show a training sample: trained and masked tokens, ids, pieces, origin");
  inspect->add_option("--config", A.config, "run configuration (YAML)")->required();
  add_set_option(inspect, A.sets);
  inspect->add_option("--stage", A.stage, "stage name or 1-based number (default: the first)");
  auto* iidx = inspect->add_option("--index", A.index, "0-based sample index within the stage (default 0)")
                   ->check(in_range(0, 1e15));
  inspect->add_option("--id", A.id, "the sample with this record id")->excludes(iidx);
  inspect->add_flag("--json", A.json, "one JSON object per sample: text, ids, mask, origin");

  return {{prepare, run_prepare},
          {stats, run_stats},
          {render, run_render},
          {tmpl, run_template},
          {inspect, run_inspect}};
}

}  // namespace sft::cli
