// Statistics of one vocabulary chunk of one row, in a single read of the
// logits: bad-value flag, max, sum of exp, tempered sum, first argmax and
// the top-K candidates. The loops are written for the compiler's vectoriser
// (`omp simd` reductions, branch-free exp); chunks merge with the shared
// merge_partial / topk_merge, exactly like CUDA blocks do.
#pragma once

#include <algorithm>
#include <cstdint>

#include "blendin/blend_math.h"

namespace blendin::cpu {

// Elements per chunk: the unit of parallel work and of the sampling walk.
// 4096 floats (16 KiB) keep a chunk and its staging copy in L1/L2.
constexpr int64_t kChunk = 4096;
// Elements per sub-block whose max is kept to find top-K candidates cheaply.
constexpr int64_t kSubBlock = 128;
constexpr int64_t kSubBlocksPerChunk = kChunk / kSubBlock;

struct ChunkStats {
  SoftmaxPartial softmax;
  TopK top;
};

inline bool any_bad_logit(const float* x, int64_t n) {
  int bad = 0;
#pragma omp simd reduction(| : bad)
  for (int64_t i = 0; i < n; ++i) bad |= is_bad_logit(x[i]) ? 1 : 0;
  return bad != 0;
}

// Max of x[0, n), and whether any entry is NaN. Max is exact in any order,
// so an `omp simd` reduction is safe (GCC emits vmaxps only under it). A +inf
// entry shows up as an infinite max.
inline float max_and_nan(const float* x, int64_t n, bool& any_nan) {
  float m = -BLENDIN_INF;
  int nan = 0;
#pragma omp simd reduction(max : m) reduction(| : nan)
  for (int64_t i = 0; i < n; ++i) {
    m = x[i] > m ? x[i] : m;
    nan |= x[i] != x[i] ? 1 : 0;
  }
  any_nan |= nan != 0;
  return m;
}

// Float sums keep kLanes independent accumulators: the compiler vectorises
// the inner loop without reassociating, and the summation order (hence the
// result) does not depend on the vector width.
constexpr int64_t kLanes = 16;

// sum of exp((x - max) * scale)
inline float sum_exp(const float* x, int64_t n, float max, float scale) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) lanes[j] += fast_exp((x[i + j] - max) * scale);
  }
  float s = 0.0f;
  for (; i < n; ++i) s += fast_exp((x[i] - max) * scale);
  for (int64_t j = 0; j < kLanes; ++j) s += lanes[j];
  return s;
}

// Token id of element i: `ids[i]` for a mapped guide (base ids), else
// first_id + i.
struct ChunkIds {
  const int32_t* ids;
  int32_t first_id;
  int32_t at(int64_t i) const { return ids ? ids[i] : first_id + static_cast<int32_t>(i); }
};

// x: n <= kChunk logits with masked entries already -inf. The chunk is bad
// when x holds NaN or +inf, or when `bad` says the raw logits did (a mapped
// guide chunk masks unmapped entries before they reach here). When
// `tempered` is false the tempered sum is not needed (greedy, or T == 1)
// and mirrors `sum`.
inline ChunkStats chunk_stats(const float* x, int64_t n, ChunkIds ids, bool bad,
                              bool tempered, float inv_temperature) {
  ChunkStats out;
  out.softmax = empty_partial();
  topk_clear(out.top);

  float block_max[kSubBlocksPerChunk];
  const int64_t blocks = (n + kSubBlock - 1) / kSubBlock;
  float m = -BLENDIN_INF;
  bool any_nan = false;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kSubBlock;
    block_max[b] = max_and_nan(x + begin, std::min(kSubBlock, n - begin), any_nan);
    m = block_max[b] > m ? block_max[b] : m;
  }
  bad |= any_nan || m == BLENDIN_INF;
  out.softmax.bad = bad ? 1 : 0;
  if (bad || m == -BLENDIN_INF) return out;  // nothing usable in this chunk

  out.softmax.max = m;
  out.softmax.sum = sum_exp(x, n, m, 1.0f);
  out.softmax.sum_tempered = tempered ? sum_exp(x, n, m, inv_temperature) : out.softmax.sum;

  // Only sub-blocks whose max reaches the K-th largest sub-block max can
  // hold a top-K element (the K largest block maxima are K distinct
  // elements), and only sub-blocks whose max equals m hold the argmax.
  TopK block_rank;
  topk_clear(block_rank);
  for (int64_t b = 0; b < blocks; ++b) topk_insert(block_rank, block_max[b], static_cast<int32_t>(b));
  const float floor = topk_floor(block_rank);
  for (int64_t b = 0; b < blocks; ++b) {
    if (block_max[b] < floor || block_max[b] == -BLENDIN_INF) continue;
    const int64_t end = std::min(n, (b + 1) * kSubBlock);
    for (int64_t i = b * kSubBlock; i < end; ++i) {
      if (x[i] < floor || x[i] == -BLENDIN_INF) continue;  // cannot be in the top-K
      const int32_t id = ids.at(i);
      topk_insert(out.top, x[i], id);
      if (x[i] == m && id < out.softmax.argmax) out.softmax.argmax = id;
    }
  }
  return out;
}

}  // namespace blendin::cpu
