#include "sft/util/malloc_tuning.h"

#include <malloc.h>

#include <climits>

namespace sft {

void tune_malloc() {
  mallopt(M_TRIM_THRESHOLD, INT_MAX);         // never give the heap top back
  mallopt(M_TOP_PAD, 1024 * 1024 * 1024);     // grow the heap in large steps
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);  // fixed: stop the dynamic threshold from mmapping mid-size buffers
}

}  // namespace sft
