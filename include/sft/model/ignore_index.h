// The label of a position the loss skips, PyTorch's and Hugging Face's convention: prompt
// tokens, padding, the last token of each packed sample. The data module writes it, the
// model's loss skips it.
#pragma once

#include <cstdint>

namespace sft::model {

constexpr std::int64_t kIgnoreIndex = -100;

}  // namespace sft::model
