// The CPU BlendIn step: torch-free, parallelised through a caller-supplied
// parallel-for (torch's thread pool in the extension, a plain loop in the
// C++ unit tests).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

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
// Runs the CPU variant active_cpu_variant() names.
template <typename T>
void blend_step(const T* base_logits, const T* guide_logits, const StepParams& params,
                const ParallelFor& parallel_for);

// The kernel is built in several CPU variants (cpu_variant.h), which give
// the same results. The active one is BLENDIN_CPU_VARIANT from the
// environment when set (read once per process; "auto" or empty: unset),
// else the best this CPU can run. Throws std::runtime_error when the
// variable names a variant this build lacks or this CPU cannot run.
std::string active_cpu_variant();

// The variants of this build that this CPU can run, best first.
std::vector<std::string> runnable_cpu_variants();

// blend_step on one named variant (tests, benchmarks); throws
// std::runtime_error like active_cpu_variant when it cannot run here.
template <typename T>
void blend_step_variant(const std::string& variant, const T* base_logits, const T* guide_logits,
                        const StepParams& params, const ParallelFor& parallel_for);

}  // namespace blendin::cpu
