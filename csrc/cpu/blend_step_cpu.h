// The CPU BlendIn step: torch-free, parallelised through a caller-supplied
// parallel-for (torch's thread pool in the extension, a plain loop in the
// C++ unit tests).
#pragma once

#include <cstdint>
#include <functional>

#include "blendin/step_params.h"

namespace blendin::cpu {

// Calls body(begin, end) over disjoint pieces covering [0, n); pieces smaller
// than `grain` items are not worth a thread.
using ParallelFor = std::function<void(int64_t n, int64_t grain,
                                       const std::function<void(int64_t, int64_t)>& body)>;

inline void serial_for(int64_t n, int64_t /*grain*/,
                       const std::function<void(int64_t, int64_t)>& body) {
  if (n > 0) body(0, n);
}

// One decode step for every row of `params` (see step_params.h). T is float,
// Float16Bits or BFloat16Bits. Arguments must already be validated; a row
// with NaN / +inf / all-masked logits gets token -1 and NaN statistics.
template <typename T>
void blend_step(const T* base_logits, const T* guide_logits, const StepParams& params,
                const ParallelFor& parallel_for);

}  // namespace blendin::cpu
