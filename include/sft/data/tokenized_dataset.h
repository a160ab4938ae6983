// TokenizedDataset: every good record of one dataset file rendered with the run's template,
// tokenized with its trained-token flags, kept in a binary cache keyed by a hash of everything that shapes it
// (the data file's bytes, the tokenizer, template and system message, the reader's options,
// max_seq_len and the truncation policy).
//
// The cache lives in <data.cache_dir>/<dataset>-<key>/ and is written to a temporary folder,
// fsynced and renamed, so a crash never leaves a half-written cache. Loading checks sizes
// and SHA-256 checksums; a stale or corrupt cache is rebuilt, never trusted. Token arrays
// are memory-mapped. The trained flags are stored in mask.bin (the cache's file name, kept so
// existing caches stay valid).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sft/config/run_config.h"
#include "sft/data/chat_template.h"
#include "sft/data/readers.h"
#include "sft/data/tokenizer.h"
#include "sft/util/fs.h"

namespace sft::data {

enum class SampleStatus : std::uint8_t {
  kOk = 0,
  kZeroTarget = 1,  // no trained token left (e.g. truncated before the answer): reported, not trained
  kTooLong = 2,     // longer than max_seq_len under truncation: drop
};

struct DatasetStats {
  std::int64_t read = 0, kept = 0, bad = 0, filtered = 0, trailing_user_turns = 0;
  std::int64_t truncated = 0, zero_target = 0, too_long = 0;
  std::int64_t tokens = 0, trained_tokens = 0;  // over trainable samples (JSON: target_tokens)
  std::vector<BadRecord> first_bad;             // up to 5
};

class TokenizedDataset {
 public:
  const std::string& name() const { return name_; }
  std::int64_t size() const { return static_cast<std::int64_t>(offsets_.size()) - 1; }  // records
  std::int64_t length(std::int64_t i) const { return offsets_[i + 1] - offsets_[i]; }
  const std::int32_t* ids(std::int64_t i) const { return ids_ + offsets_[i]; }
  const std::uint8_t* trained(std::int64_t i) const { return trained_ + offsets_[i]; }  // Encoded::trained
  SampleStatus status(std::int64_t i) const { return static_cast<SampleStatus>(status_[i]); }
  bool truncated(std::int64_t i) const { return truncated_[i] != 0; }
  // Trained tokens after the first position: the sample's loss terms (a first token has no
  // position before it to predict it).
  std::int64_t trained_tokens(std::int64_t i) const;
  Origin origin(std::int64_t i) const;
  const DatasetStats& stats() const { return stats_; }
  const std::string& key() const { return key_; }
  const std::string& dir() const { return dir_; }

 private:
  friend std::shared_ptr<const TokenizedDataset> prepare_dataset(const config::DatasetSpec&,
                                                                 const config::DataSpec&, const Tokenizer&,
                                                                 const ChatTemplate&, bool*);
  std::string name_, key_, dir_, file_;
  std::shared_ptr<fs::MappedFile> ids_map_, trained_map_;
  std::shared_ptr<std::vector<std::int32_t>> owned_ids_;  // freshly built, not yet mapped
  std::shared_ptr<std::vector<std::uint8_t>> owned_trained_;
  const std::int32_t* ids_ = nullptr;
  const std::uint8_t* trained_ = nullptr;
  std::vector<std::int64_t> offsets_;
  std::vector<std::uint8_t> status_, truncated_;
  std::vector<std::int64_t> lines_, indices_;
  std::vector<std::string> record_ids_;
  DatasetStats stats_;
};

// Loads the dataset's cache, or builds it (reading, templating, tokenizing) when absent,
// stale or corrupt. `rebuilt` (optional) tells which happened.
std::shared_ptr<const TokenizedDataset> prepare_dataset(const config::DatasetSpec& dataset,
                                                        const config::DataSpec& data, const Tokenizer& tok,
                                                        const ChatTemplate& tmpl, bool* rebuilt = nullptr);

// The template a dataset is rendered with: the run's, with the dataset's system message;
// template: auto is resolved against `tok`'s folder, and the tokenizer checked to hold the
// template's special tokens (ConfigError otherwise).
ChatTemplate template_for(const config::RunConfig& cfg, const config::DatasetSpec& dataset,
                          const Tokenizer& tok);

}  // namespace sft::data
