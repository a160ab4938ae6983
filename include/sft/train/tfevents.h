// TensorBoard event files (events.out.tfevents.*) written without TensorFlow: TFRecord
// framing (length, masked CRC-32C, payload, masked CRC-32C) around hand-encoded Event
// protobufs carrying scalar summaries, so `tensorboard --logdir <output_dir>` shows the run.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace sft::train {

std::uint32_t crc32c(const void* data, std::size_t n);
std::uint32_t masked_crc32c(const void* data, std::size_t n);

class TfEventsWriter {
 public:
  explicit TfEventsWriter(const std::string& dir);  // creates events.out.tfevents.<time>.<host>
  ~TfEventsWriter();
  TfEventsWriter(const TfEventsWriter&) = delete;
  TfEventsWriter& operator=(const TfEventsWriter&) = delete;

  void scalar(const std::string& tag, double value, std::int64_t step, double wall_time);
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& payload);
  std::string path_;
  std::FILE* f_ = nullptr;
};

// For tests and tools: decodes the scalar events of a file, checking every CRC.
struct ScalarEvent {
  std::string tag;
  float value;
  std::int64_t step;
};
std::vector<ScalarEvent> read_scalar_events(const std::string& path);  // throws on a bad record

}  // namespace sft::train
