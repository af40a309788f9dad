// The CUDA kernel's variants, and the one in use. Plain C++ (no CUDA
// headers): the CPU-only build also answers cuda_kernel_variants(), so
// scripts can ask before a GPU is there.
//
//  - cooperative (default): every row worked on by a team of blocks that
//    wait for one another (coop_kernel.cuh); the grid is resident at once.
//  - last_block: one block per (row, slice); the last block of a row to
//    finish its slice completes the row alone (blend_step_kernel.cuh).
//
// The default is the variant whose static figures are best (occupancy, and
// no phase that one block does alone while the grid idles) until a GPU run
// of `blendin bench step --device cuda --variants all` measures otherwise.
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace blendin::cuda {

enum class KernelVariant : int { kCooperative = 0, kLastBlock = 1 };
constexpr int kKernelVariantCount = 2;

inline const char* kernel_variant_name(KernelVariant v) {
  return v == KernelVariant::kLastBlock ? "last_block" : "cooperative";
}

// False when `name` is not a variant.
inline bool kernel_variant_from_name(const char* name, KernelVariant* out) {
  for (int i = 0; i < kKernelVariantCount; ++i) {
    const KernelVariant v = static_cast<KernelVariant>(i);
    if (std::strcmp(name, kernel_variant_name(v)) == 0) {
      *out = v;
      return true;
    }
  }
  return false;
}

// The process-wide choice: BLENDIN_CUDA_KERNEL when the first step asks
// (an unknown name is left for the caller to report), else the default.
inline std::atomic<int>& kernel_variant_slot() {
  static std::atomic<int> slot{[] {
    KernelVariant v = KernelVariant::kCooperative;
    const char* env = std::getenv("BLENDIN_CUDA_KERNEL");
    if (env != nullptr && *env != '\0' && !kernel_variant_from_name(env, &v)) return -1;
    return static_cast<int>(v);
  }()};
  return slot;
}

}  // namespace blendin::cuda
