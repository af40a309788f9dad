// A bfloat16 linear layer, y = x W^T + bias, for decoding on a CPU.
//
// A decode step multiplies a handful of rows by every weight of the model,
// so its time is the time to read the weights. oneDNN's packed linear reads
// them at about two thirds of this machine's bandwidth and adds tens of
// microseconds per call; this kernel streams one packed copy of W from
// start to end and spends its time on the read (benchmarks/README.md).
//
// Packed layout ("pair-interleaved blocks"): the output columns are cut in
// blocks of kLinearBlockCols; within a block, each pair of inputs (2p,
// 2p + 1) of every column lies side by side, so one 64-byte load holds one
// input pair of 16 columns, what AVX-512 BF16's dot-product instruction
// takes:
//   packed[b][p][j][t] = W[b * kLinearBlockCols + j][2 * p + t],
// zero where the index lies outside W; shape (ceil(out / 64), ceil(in / 2),
// 64, 2). blendin_ext/models/bf16_linear.py packs and unpacks it.
//
// Arithmetic: each output is a float32 sum over the input pairs in order,
// each pair adding its odd product, then its even one (the order of
// VDPBF16PS; a product of two bfloat16 values is exact in float32), plus
// the bias, rounded once to bfloat16 (nearest even).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "blend_step_cpu.h"       // ParallelFor
#include "blendin/step_params.h"  // BFloat16Bits

namespace blendin::cpu {

constexpr int64_t kLinearBlockCols = 64;

struct LinearArgs {
  const BFloat16Bits* x;       // (rows, in), rows contiguous
  const BFloat16Bits* packed;  // the packed weight, layout above
  const BFloat16Bits* bias;    // (out,) or null
  BFloat16Bits* y;             // (rows, out)
  int64_t rows, in, out;
};

inline int64_t linear_blocks(int64_t out) {
  return (out + kLinearBlockCols - 1) / kLinearBlockCols;
}
inline int64_t linear_pairs(int64_t in) { return (in + 1) / 2; }

// y = x W^T + bias with the best kernel this build and CPU have.
void bf16_linear(const LinearArgs& args, const ParallelFor& parallel_for);

// The kernels: "avx512_bf16" (x86-64 builds, CPUs with AVX512_BF16) and
// "generic" (portable C++, the same arithmetic). bf16_linear_kernels()
// lists those this build has and this CPU runs, best first; the named call
// throws std::runtime_error for any other name.
std::vector<std::string> bf16_linear_kernels();
void bf16_linear_with(const std::string& kernel, const LinearArgs& args,
                      const ParallelFor& parallel_for);

// Columns blocks [begin, end) of one call; each kernel defines one.
void bf16_linear_blocks_generic(const LinearArgs& args, int64_t begin, int64_t end);
#if defined(BLENDIN_BF16_LINEAR_AVX512)
void bf16_linear_blocks_avx512_bf16(const LinearArgs& args, int64_t begin, int64_t end);
#endif

}  // namespace blendin::cpu
