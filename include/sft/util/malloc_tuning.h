// Keeps freed memory in the process. LibTorch frees and re-allocates the same large
// activation buffers every step; returning them to the kernel makes every step pay for
// fresh page faults (measured 2.7-4x slower training steps, bench/RESULTS.md). Call once
// at startup, before the first large allocation.
#pragma once

namespace sft {
void tune_malloc();
}
