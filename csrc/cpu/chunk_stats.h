// Statistics of one vocabulary chunk of one row, in a single read of the
// logits: bad-value flag, max, sum of exp, tempered sum and the maxima of
// its sub-blocks. The loops are written for the compiler's vectoriser
// (`omp simd` reductions, branch-free exp); chunks merge with the shared
// merge_partial, exactly like CUDA blocks do. A row's top-K candidates and
// argmax come afterwards from the sub-block maxima (row_candidates), so only
// a handful of sub-blocks per row are read a second time.
#pragma once

#include <algorithm>
#include <cstdint>

#include "blendin/blend_math.h"
#include "cpu_variant.h"

namespace blendin::cpu {
inline namespace BLENDIN_CPU_VARIANT {  // see cpu_variant.h

// Elements per chunk: the unit of parallel work and of the sampling walk.
// 4096 floats (16 KiB) keep a chunk and its staging copy in L1/L2.
constexpr int64_t kChunk = 4096;
// Elements per sub-block whose max is kept to find top-K candidates cheaply.
constexpr int64_t kSubBlock = 256;
constexpr int64_t kSubBlocksPerChunk = kChunk / kSubBlock;

struct ChunkStats {
  SoftmaxPartial softmax;  // argmax is left unset: row_candidates finds it
  float block_max[kSubBlocksPerChunk];
};

inline bool any_bad_logit(const float* x, int64_t n) {
  int bad = 0;
#pragma omp simd reduction(| : bad)
  for (int64_t i = 0; i < n; ++i) bad |= is_bad_logit(x[i]) ? 1 : 0;
  return bad != 0;
}

// Max is exact in any order, so an `omp simd` reduction is safe (GCC emits
// vmaxps only under it). NaN entries are skipped here (sum_exp reports
// them); a +inf entry shows up as an infinite max.
inline float max_of(const float* x, int64_t n) {
  float m = -BLENDIN_INF;
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// Float sums keep kLanes independent accumulators: the compiler vectorises
// the inner loop without reassociating, and the summation order (hence the
// result) does not depend on the vector width.
constexpr int64_t kLanes = 16;

// sum of exp((x - max) * scale); sets any_nan when an entry is NaN (the
// pass already reads every entry, so the check costs no extra read).
inline float sum_exp(const float* x, int64_t n, float max, float scale, bool& any_nan) {
  float lanes[kLanes] = {};
  int32_t nan_lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) {
      lanes[j] += fast_exp((x[i + j] - max) * scale);
      nan_lanes[j] |= x[i + j] != x[i + j] ? 1 : 0;
    }
  }
  float s = 0.0f;
  int32_t nan = 0;
  for (; i < n; ++i) {
    s += fast_exp((x[i] - max) * scale);
    nan |= x[i] != x[i] ? 1 : 0;
  }
  for (int64_t j = 0; j < kLanes; ++j) {
    s += lanes[j];
    nan |= nan_lanes[j];
  }
  any_nan |= nan != 0;
  return s;
}

// x: n <= kChunk logits with masked entries already -inf. The chunk is bad
// when x holds NaN or +inf, or when `bad` says the raw logits did (a mapped
// guide chunk masks unmapped entries before they reach here). When
// `tempered` is false the tempered sum is not needed (greedy, or T == 1)
// and mirrors `sum`.
inline ChunkStats chunk_stats(const float* x, int64_t n, bool bad, bool tempered,
                              float inv_temperature) {
  ChunkStats out;
  out.softmax = empty_partial();
  const int64_t blocks = (n + kSubBlock - 1) / kSubBlock;
  float m = -BLENDIN_INF;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kSubBlock;
    out.block_max[b] = max_of(x + begin, std::min(kSubBlock, n - begin));
    m = out.block_max[b] > m ? out.block_max[b] : m;
  }
  if (m == -BLENDIN_INF) {  // nothing usable here, unless it hides a NaN
    out.softmax.bad = bad || any_bad_logit(x, n);
    return out;
  }
  bool any_nan = false;
  const float sum = sum_exp(x, n, m, 1.0f, any_nan);
  bad |= any_nan || m == BLENDIN_INF;
  out.softmax.bad = bad ? 1 : 0;
  if (bad) return out;

  out.softmax.max = m;
  out.softmax.sum = sum;
  out.softmax.sum_tempered = tempered ? sum_exp(x, n, m, inv_temperature, any_nan) : sum;
  return out;
}

// Max of sub-block b of a row (counted across the row's chunks).
inline float sub_block_max(const ChunkStats* chunks, int64_t b) {
  return chunks[b / kSubBlocksPerChunk].block_max[b % kSubBlocksPerChunk];
}

// The row's top-K (logit, base id) candidates and its first argmax (base id
// of the smallest maximum), from its chunks' sub-block maxima: the K largest
// sub-block maxima are K distinct logits, so only sub-blocks whose max
// reaches the K-th of them can hold a top-K entry, and the argmax lies in
// one of those. `value_at(j, &id)` returns entry j (-inf when masked or
// unmapped) and its base id.
template <typename ValueAt>
void row_candidates(const ChunkStats* chunks, int64_t length, float row_max,
                    const ValueAt& value_at, TopK& top, int32_t& argmax) {
  const int64_t blocks = (length + kSubBlock - 1) / kSubBlock;
  auto block_max = [&](int64_t b) { return sub_block_max(chunks, b); };
  TopK block_rank;
  topk_clear(block_rank);
  for (int64_t b = 0; b < blocks; ++b) {
    if (block_max(b) >= topk_floor(block_rank)) {
      topk_insert(block_rank, block_max(b), static_cast<int32_t>(b));
    }
  }
  const float floor = topk_floor(block_rank);
  topk_clear(top);
  argmax = INT32_MAX;
  for (int64_t b = 0; b < blocks; ++b) {
    if (block_max(b) < floor || block_max(b) == -BLENDIN_INF) continue;
    const int64_t end = std::min(length, (b + 1) * kSubBlock);
    for (int64_t j = b * kSubBlock; j < end; ++j) {
      int32_t id;
      const float x = value_at(j, &id);
      if (x < floor || x == -BLENDIN_INF) continue;  // cannot be in the top-K
      topk_insert(top, x, id);
      if (x == row_max && id < argmax) argmax = id;
    }
  }
}

}  // namespace BLENDIN_CPU_VARIANT
}  // namespace blendin::cpu
