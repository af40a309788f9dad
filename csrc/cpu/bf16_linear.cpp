// The portable bfloat16 linear kernel and the choice between kernels
// (bf16_linear.h). Compiled with the default flags, like the glue.
#include "bf16_linear.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "float_load.h"  // to_float

namespace blendin::cpu {
namespace {

// Round to nearest even; a NaN stays a (quiet) NaN.
BFloat16Bits narrow(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return BFloat16Bits{uint16_t((bits >> 16) | 0x40)};
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return BFloat16Bits{uint16_t(bits >> 16)};
}

bool cpu_has_avx512_bf16() {
#if defined(BLENDIN_BF16_LINEAR_AVX512)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

using BlocksFn = void (*)(const LinearArgs&, int64_t, int64_t);

BlocksFn kernel_named(const std::string& name) {
#if defined(BLENDIN_BF16_LINEAR_AVX512)
  if (name == "avx512_bf16") {
    if (!cpu_has_avx512_bf16())
      throw std::runtime_error("bf16_linear: this CPU has no AVX512_BF16 (kernel avx512_bf16)");
    return &bf16_linear_blocks_avx512_bf16;
  }
#endif
  if (name == "generic") return &bf16_linear_blocks_generic;
  throw std::runtime_error("bf16_linear: no kernel named '" + name + "' in this build");
}

void run_blocks(BlocksFn blocks, const LinearArgs& args, const ParallelFor& parallel_for) {
  const int64_t n = linear_blocks(args.out);
  if (args.rows == 0 || n == 0) return;
  // A task should read at least ~128 KB of weights: below that, waking a
  // thread costs about as much as the read it takes over.
  const int64_t block_bytes =
      std::max<int64_t>(1, kLinearBlockCols * linear_pairs(args.in) * 2 * sizeof(BFloat16Bits));
  const int64_t grain = (128 * 1024 + block_bytes - 1) / block_bytes;
  parallel_for(n, grain, [&](int64_t begin, int64_t end) { blocks(args, begin, end); });
}

}  // namespace

void bf16_linear_blocks_generic(const LinearArgs& a, int64_t begin, int64_t end) {
  const int64_t pairs = linear_pairs(a.in);
  for (int64_t b = begin; b < end; ++b) {
    const BFloat16Bits* block = a.packed + b * pairs * kLinearBlockCols * 2;
    const int64_t first = b * kLinearBlockCols;
    const int64_t cols = std::min(kLinearBlockCols, a.out - first);
    for (int64_t r = 0; r < a.rows; ++r) {
      const BFloat16Bits* x = a.x + r * a.in;
      float acc[kLinearBlockCols] = {};
      for (int64_t p = 0; p < pairs; ++p) {
        const float x_even = to_float(x[2 * p]);
        const float x_odd = 2 * p + 1 < a.in ? to_float(x[2 * p + 1]) : 0.0f;
        const BFloat16Bits* w = block + p * kLinearBlockCols * 2;
        for (int64_t j = 0; j < kLinearBlockCols; ++j) {
          acc[j] += to_float(w[2 * j + 1]) * x_odd;
          acc[j] += to_float(w[2 * j]) * x_even;
        }
      }
      for (int64_t j = 0; j < cols; ++j) {
        const float bias = a.bias != nullptr ? to_float(a.bias[first + j]) : 0.0f;
        a.y[r * a.out + first + j] = narrow(a.bias != nullptr ? acc[j] + bias : acc[j]);
      }
    }
  }
}

std::vector<std::string> bf16_linear_kernels() {
  std::vector<std::string> names;
  if (cpu_has_avx512_bf16()) names.push_back("avx512_bf16");
  names.push_back("generic");
  return names;
}

void bf16_linear_with(const std::string& kernel, const LinearArgs& args,
                      const ParallelFor& parallel_for) {
  run_blocks(kernel_named(kernel), args, parallel_for);
}

void bf16_linear(const LinearArgs& args, const ParallelFor& parallel_for) {
  static const BlocksFn best = kernel_named(bf16_linear_kernels().front());
  run_blocks(best, args, parallel_for);
}

}  // namespace blendin::cpu
