// Which records each stage trains on: the data side of the four strategies of Dong et al.
// (2024, "How Abilities in LLMs are Affected by SFT Data Composition").
//
//   multi_task        one stage: every dataset mixed.
//   sequential        one stage per dataset, in order (paper: code, then math, then general).
//   mixed_sequential  stage 1: all specialised data mixed; stage 2: general data.
//   dmt               Dual-stage Mixed Fine-tuning: stage 1 as above; stage 2: general data
//                     plus a share k of each specialised dataset (the paper's k = 1/256).
//
// (config::load_run_config turns a preset into explicit stages; this file fixes the records.)
//
// Selection is nested by construction. Each dataset gets one seeded permutation (seed, name);
// a dataset's fraction f takes its first round(f*N) records, a stage source's share g (its
// YAML fraction) takes the first round(g * round(f*N)) of those, and DMT's replay draws from the same prefix.
// So for one seed the 1/256 subset is inside the 1/64 subset, replay 1/256 inside replay 1/64, and the
// replayed records are always records stage 1 trained on.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sft/config/run_config.h"

namespace sft::data {

// What one stage source trains on. DatasetSpec::fraction and StageSource::share are the
// config's; this holds what they select, and their product file_share(). Both pointers point
// into the RunConfig the plan was made from, which must outlive it.
struct SourceSelection {
  const config::StageSource* source = nullptr;
  const config::DatasetSpec* dataset = nullptr;  // the source's dataset
  std::int64_t records = 0;                      // distinct records the source contributes

  const std::string& dataset_name() const { return source->dataset; }
  std::size_t dataset_index() const { return source->dataset_index; }
  bool replay() const { return source->replay; }
  int repeat() const { return dataset->repeat; }                      // times each record appears per epoch
  std::int64_t samples() const { return records * dataset->repeat; }  // per epoch
  // The share of the whole dataset file (its good records) the source draws: the dataset's
  // fraction times the source's share (reported as "fraction" in JSON).
  double file_share() const { return dataset->fraction * source->share; }
};

struct StageSelection {
  const config::StageSpec* stage = nullptr;
  std::vector<SourceSelection> sources;
  std::int64_t samples = 0;  // per epoch: the sources' samples summed
};

struct DataPlan {
  std::vector<std::int64_t> dataset_records;   // good records per dataset (N)
  std::vector<bool> dataset_size_estimated;    // N came from `size:` (file absent)
  std::vector<std::int64_t> dataset_selected;  // round(f*N) per dataset
  std::vector<StageSelection> stages;
  std::vector<std::vector<std::int64_t>> permutations;  // per dataset, seeded

  // The record indices (into the dataset's good records) a source trains on.
  std::vector<std::int64_t> records_of(const SourceSelection& s) const;
};

// REQUIRES: records_per_dataset[i] belongs to cfg.datasets[i]. Throws ConfigError when a
// dataset's fraction or a source's share selects no record (the dataset is too small for it).
DataPlan plan_data(const config::RunConfig& cfg, const std::vector<std::int64_t>& records_per_dataset,
                   const std::vector<bool>& estimated = {});

// Seed of a dataset's permutation; shared by every stage and fraction of a run.
std::uint64_t dataset_seed(std::uint64_t run_seed, const std::string& dataset);

// round(f*n) with halves rounded up; the count a fraction (or a share) f of n selects.
std::int64_t fraction_count(double f, std::int64_t n);

}  // namespace sft::data
