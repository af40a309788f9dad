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

// Max is exact in any order, so the lanes may be combined in any order.
// kMaxLanes independent running maxima (four AVX-512 vectors) keep the
// loop from waiting on one max's latency; GCC emits vmaxps for the final
// combine only under `omp simd`. NaN entries are skipped here (sum_exp
// reports them); a +inf entry shows up as an infinite max.
constexpr int64_t kMaxLanes = 64;

inline float max_of(const float* x, int64_t n) {
  float lanes[kMaxLanes];
  for (int64_t j = 0; j < kMaxLanes; ++j) lanes[j] = -BLENDIN_INF;
  int64_t i = 0;
  for (; i + kMaxLanes <= n; i += kMaxLanes) {
    for (int64_t j = 0; j < kMaxLanes; ++j) lanes[j] = x[i + j] > lanes[j] ? x[i + j] : lanes[j];
  }
  float m = -BLENDIN_INF;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < kMaxLanes; ++j) m = lanes[j] > m ? lanes[j] : m;
  return m;
}

// Float sums keep kLanes independent accumulators: the compiler vectorises
// the inner loop without reassociating, and the summation order (hence the
// result) does not depend on the vector width.
constexpr int64_t kLanes = 16;

// Bytes the exp pass of one chunk pulls into cache ahead of the next chunk:
// reading a chunk for its maxima is bound by memory and the exp pass after it
// by arithmetic, so without this the two never overlap.
struct Prefetch {
  const char* data = nullptr;
  int64_t bytes = 0;
};

constexpr int64_t kCacheLine = 64;

// sum of exp((x - max) * scale); sets any_nan when an entry is NaN (a NaN
// entry makes the sum NaN, so the check costs nothing per entry). Touches
// one cache line of `ahead` per kLanes entries (a kChunk of floats is as
// many lines as iterations).
inline float sum_exp(const float* x, int64_t n, float max, float scale, bool& any_nan,
                     Prefetch ahead = {}) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  int64_t fetched = 0;
  for (; i + kLanes <= n; i += kLanes) {
#if defined(__GNUC__) || defined(__clang__)
    if (fetched < ahead.bytes) {
      __builtin_prefetch(ahead.data + fetched, /*rw=*/0, /*locality: L2=*/2);
      fetched += kCacheLine;
    }
#endif
    for (int64_t j = 0; j < kLanes; ++j) lanes[j] += fast_exp_keep_nan((x[i + j] - max) * scale);
  }
  float s = 0.0f;
  for (; i < n; ++i) s += fast_exp_keep_nan((x[i] - max) * scale);
  for (int64_t j = 0; j < kLanes; ++j) s += lanes[j];
  any_nan |= s != s;
  return s;
}

// x: n <= kChunk logits with masked entries already -inf. The chunk is bad
// when x holds NaN or +inf, or when `bad` says the raw logits did (a mapped
// guide chunk masks unmapped entries before they reach here). When
// `tempered` is false the tempered sum is not needed (greedy, or T == 1)
// and mirrors `sum`. `ahead`: the next chunk's raw logits, to prefetch.
inline ChunkStats chunk_stats(const float* x, int64_t n, bool bad, bool tempered,
                              float inv_temperature, Prefetch ahead = {}) {
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
  const float sum = sum_exp(x, n, m, 1.0f, any_nan, ahead);
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

// True when some x[i], i < n, is >= floor (vectorised; NaN counts as no).
inline bool any_at_least(const float* x, int64_t n, float floor) {
  int hit = 0;
#pragma omp simd reduction(| : hit)
  for (int64_t i = 0; i < n; ++i) hit |= x[i] >= floor ? 1 : 0;
  return hit != 0;
}

// Entries scanned per vectorised test in row_candidates.
constexpr int64_t kScanGroup = 32;

// The row's top-K (logit, base id) candidates and its first argmax (base id
// of the smallest maximum), from its chunks' sub-block maxima: the K largest
// sub-block maxima are K distinct logits, so only sub-blocks whose max
// reaches the K-th of them can hold a top-K entry, and the argmax lies in
// one of those. Inside such a sub-block a vectorised test on the raw
// logits skips the groups with no entry at the floor (masking only lowers
// a value), so only a few entries per row go through the list.
// `raw_at(begin, n, staging)` returns entries [begin, begin + n) as floats
// before masking (n <= kSubBlock; staging has room for kSubBlock);
// `value_at(j, &id)` returns entry j (-inf when masked or unmapped) and its
// base id.
template <typename RawAt, typename ValueAt>
void row_candidates(const ChunkStats* chunks, int64_t length, float row_max, const RawAt& raw_at,
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
  float staging[kSubBlock];
  for (int64_t b = 0; b < blocks; ++b) {
    if (block_max(b) < floor || block_max(b) == -BLENDIN_INF) continue;
    const int64_t begin = b * kSubBlock;
    const int64_t end = std::min(length, begin + kSubBlock);
    const float* raw = raw_at(begin, end - begin, staging);
    for (int64_t group = begin; group < end; group += kScanGroup) {
      const int64_t group_end = std::min(end, group + kScanGroup);
      if (!any_at_least(raw + (group - begin), group_end - group, floor)) continue;
      for (int64_t j = group; j < group_end; ++j) {
        int32_t id;
        const float x = value_at(j, &id);
        if (x < floor || x == -BLENDIN_INF) continue;  // cannot be in the top-K
        topk_insert(top, x, id);
        if (x == row_max && id < argmax) argmax = id;
      }
    }
  }
}

}  // namespace BLENDIN_CPU_VARIANT
}  // namespace blendin::cpu
