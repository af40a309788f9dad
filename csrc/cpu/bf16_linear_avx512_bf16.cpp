// The AVX-512 BF16 kernel of bf16_linear.h, compiled on x86-64 with
// -mavx512f -mavx512bw -mavx512vl -mavx512bf16 and called only on CPUs
// that have them (bf16_linear.cpp checks).
//
// One column block (64 outputs) at a time, rows in tiles of up to six: for
// each input pair, four 64-byte loads of the block (the pair of each of the
// 64 columns) meet each row's pair broadcast to every lane, in 4 x 6
// float32 accumulators, one lane per output. The block's weights stream
// from memory once per call; the rows stay in L1.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "bf16_linear.h"

namespace blendin::cpu {
namespace {

constexpr int kGroups = kLinearBlockCols / 16;  // zmm registers per input pair
constexpr int kMaxTileRows = 6;                 // 6 x 4 accumulators + 4 weights < 32 zmm

// One row's input pair (2p, 2p + 1) in every 32-bit lane; past an odd
// `in`, the missing odd input is zero (its packed weight is zero too).
inline __m512bh pair_of(const BFloat16Bits* x, int64_t p, int64_t in) {
  uint32_t bits;
  if (2 * p + 1 < in) {
    std::memcpy(&bits, x + 2 * p, sizeof bits);
  } else {
    bits = x[2 * p].bits;
  }
  return (__m512bh)_mm512_set1_epi32(int(bits));
}

template <int Rows>
void tile(const LinearArgs& a, const BFloat16Bits* block, int64_t first_col, int64_t row0) {
  const int64_t pairs = linear_pairs(a.in);
  __m512 acc[Rows][kGroups];
  for (int r = 0; r < Rows; ++r)
    for (int g = 0; g < kGroups; ++g) acc[r][g] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh w[kGroups];
    for (int g = 0; g < kGroups; ++g)
      w[g] = (__m512bh)_mm512_loadu_si512(block + (p * kLinearBlockCols + g * 16) * 2);
    for (int r = 0; r < Rows; ++r) {
      const __m512bh x = pair_of(a.x + (row0 + r) * a.in, p, a.in);
      for (int g = 0; g < kGroups; ++g) acc[r][g] = _mm512_dpbf16_ps(acc[r][g], w[g], x);
    }
  }
  const int64_t cols = std::min<int64_t>(kLinearBlockCols, a.out - first_col);
  for (int g = 0; g < kGroups && g * 16 < cols; ++g) {
    const int64_t n = std::min<int64_t>(16, cols - g * 16);
    const __mmask16 mask = __mmask16((1u << n) - 1);
    __m512 bias = _mm512_setzero_ps();
    if (a.bias != nullptr) {
      const __m256i bits = _mm256_maskz_loadu_epi16(mask, a.bias + first_col + g * 16);
      // maskz forms: GCC 12 flags the plain ones' undefined pass-through operand
      const __m512i wide = _mm512_maskz_cvtepu16_epi32(mask, bits);
      bias = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(mask, wide, 16));
    }
    for (int r = 0; r < Rows; ++r) {
      const __m512 sum = a.bias != nullptr ? _mm512_add_ps(acc[r][g], bias) : acc[r][g];
      _mm256_mask_storeu_epi16(a.y + (row0 + r) * a.out + first_col + g * 16, mask,
                               (__m256i)_mm512_cvtneps_pbh(sum));
    }
  }
}

using TileFn = void (*)(const LinearArgs&, const BFloat16Bits*, int64_t, int64_t);
constexpr TileFn kTiles[kMaxTileRows + 1] = {nullptr,  &tile<1>, &tile<2>, &tile<3>,
                                             &tile<4>, &tile<5>, &tile<6>};

}  // namespace

void bf16_linear_blocks_avx512_bf16(const LinearArgs& a, int64_t begin, int64_t end) {
  const int64_t pairs = linear_pairs(a.in);
  // Tiles of equal height (8 rows: 4 + 4, not 6 + 2).
  const int64_t tiles = (a.rows + kMaxTileRows - 1) / kMaxTileRows;
  const int64_t height = (a.rows + tiles - 1) / tiles;
  for (int64_t b = begin; b < end; ++b) {
    const BFloat16Bits* block = a.packed + b * pairs * kLinearBlockCols * 2;
    for (int64_t row = 0; row < a.rows; row += height) {
      kTiles[std::min(height, a.rows - row)](a, block, b * kLinearBlockCols, row);
    }
  }
}

}  // namespace blendin::cpu
