// CPU kernel variants. blend_step_cpu.cpp (with chunk_stats.h, float_load.h
// and sampling.h) is compiled once per variant, each time with its own ISA
// flags and -DBLENDIN_CPU_VARIANT=<name>; the dispatcher
// (blend_step_dispatch.cpp) picks one at run time. Everything those files
// define lives in the inline namespace blendin::cpu::<name>, so no two
// variants share a symbol (see also BLENDIN_HD in blendin/macros.h; ctest
// checks it with csrc/tests/check_variant_symbols.cmake).
//
// Names: generic (the compiler's default flags: any x86-64, aarch64, ...),
// avx2 (the x86-64-v3 level: AVX2, FMA, F16C, ...), avx512 (x86-64-v4), and
// for single-variant builds native (-march=native) or custom (another
// -march). setup.py and CMakeLists.txt decide which are built.
#pragma once

#include <memory>
#include <vector>

#include "blend_step_cpu.h"

// Outside a variant's translation unit (unit tests, the dispatcher) the
// kernel headers compile as the generic variant, with default flags. Set
// after including blend_step_cpu.h, so BLENDIN_HD stays untagged there.
#if !defined(BLENDIN_CPU_VARIANT)
#define BLENDIN_CPU_VARIANT generic
#endif

namespace blendin::cpu {
inline namespace BLENDIN_CPU_VARIANT {

// std::allocator as a type of this variant. The linker keeps one copy of
// each out-of-line std::vector<T> member (growth, destruction) for the
// whole library, whichever variant it came from; Vector<T> gives those
// members names of their own variant instead.
template <typename T>
struct Allocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = Allocator<U>;
  };
  Allocator() = default;
  template <typename U>
  Allocator(const Allocator<U>&) noexcept {}
};

template <typename T>
using Vector = std::vector<T, Allocator<T>>;

}  // namespace BLENDIN_CPU_VARIANT
}  // namespace blendin::cpu

// The entry point every variant defines, for T = float, Float16Bits,
// BFloat16Bits; the same contract as blendin::cpu::blend_step.
#define BLENDIN_DECLARE_CPU_VARIANT(name)                                                     \
  namespace blendin::cpu {                                                                    \
  inline namespace name {                                                                     \
  template <typename T>                                                                       \
  void blend_step_impl(const T* base_logits, const T* guide_logits, const StepParams& params, \
                       const ParallelFor& parallel_for);                                      \
  }                                                                                           \
  }

BLENDIN_DECLARE_CPU_VARIANT(BLENDIN_CPU_VARIANT)
