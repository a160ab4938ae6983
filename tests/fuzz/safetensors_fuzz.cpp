// libFuzzer target for the safetensors header parser: any input must either parse or raise
// sft::CheckpointError; anything else (a crash, a sanitizer report, another exception) is
// a bug. tests/model/safetensors_test.cpp builds and runs it for a bounded time:
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
//     tests/fuzz/safetensors_fuzz.cpp src/model/safetensors_header.cpp src/util/error.cpp -o fuzz
//   ./fuzz -max_total_time=30 CORPUS_DIR
#include <cstddef>
#include <cstdint>

#include "sft/model/safetensors_header.h"
#include "sft/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    sft::model::SafetensorsHeader h = sft::model::parse_safetensors_header(data, size, "fuzz");
    // A header that parsed must describe bytes inside the input.
    for (const auto& t : h.tensors)
      if (h.data_offset + t.end > size) __builtin_trap();
  } catch (const sft::CheckpointError&) {
  }
  return 0;
}
