#include "sft/util/malloc_tuning.h"

#include <malloc.h>

#include <climits>

namespace sft {

void tune_malloc() {
  mallopt(M_TRIM_THRESHOLD, INT_MAX);      // never give the heap top back
  mallopt(M_TOP_PAD, 1024 * 1024 * 1024);  // grow the heap in large steps
  // Never serve allocations with mmap: every large activation or gradient buffer would be
  // a fresh mapping, page-faulted in on every step (measured: small preset bf16 step
  // 4.2 s with mmap, 1.55 s without). Freed blocks stay in the heap and are reused.
  mallopt(M_MMAP_MAX, 0);
}

}  // namespace sft
