// Exact top-k / top-p threshold of one component row, found by the
// finishing block alone (the rest of the grid has finished by then).
//
// Entries are ranked by rank_key() (logit desc, ties to the smaller base
// id). A query asks for the first entry, in rank order, at which the
// cumulative count reaches k (top-k) or the cumulative tempered mass reaches
// top_p of the universe's mass (top-p); the universe is every valid entry
// whose key is >= `lower` (top-p after top-k uses the top-k cut as lower).
//
//  1. distance pass: a histogram over 1024 bins of (max - x) / T (32 bins
//     per unit; the far tail shares the last bin and is counted in
//     registers) locates the bin of the cut;
//  2. while that bin holds more than kGatherCap entries: 8-bit digit
//     passes over the key narrow it further;
//  3. the survivors are gathered into shared memory, narrowed there by
//     digit passes to <= kLocalCap entries, and ranked exactly.
// Masses are 32.32 fixed point so that shared-memory atomics add them in
// any order to the same total: the select is deterministic.
#pragma once

#include "device_common.cuh"
#include "launch_plan.h"
#include "slice_stats.cuh"

namespace blendin::cuda {

constexpr int kSelectBins = 1024;
constexpr float kBinsPerUnit = 32.0f;
constexpr int kGatherCap = 1024;
constexpr int kLocalCap = 256;
constexpr unsigned long long kUnknownCount = ~0ull;

// Weight in [0, 1] as 32.32 fixed point; sums of up to 2^31 weights fit.
__device__ __forceinline__ unsigned long long to_fixed(float w) {
  return __float2ull_rn(w * 4294967296.0f);
}

// to_fixed(fast_exp(arg)) for arg <= 0, without the exp where the answer is
// known: below -23, exp < 1.03e-10 < 2^-33, which rounds to 0 (exactly as
// the full computation would).
__device__ __forceinline__ unsigned long long fixed_weight(float arg) {
  return arg < -23.0f ? 0ull : to_fixed(fast_exp(arg));
}

template <typename T>
struct SelectRow {
  RowView<T> view;
  float max;  // component max (weight 1)
  float inv_temperature;

  __device__ __forceinline__ unsigned long long weight(float x) const {
    return fixed_weight((x - max) * inv_temperature);
  }
  // Monotone in x (larger logit, smaller or equal bin).
  __device__ __forceinline__ int bin(float x) const {
    const float d = (max - x) * (inv_temperature * kBinsPerUnit);
    return d < static_cast<float>(kSelectBins - 1) ? static_cast<int>(d) : kSelectBins - 1;
  }
};

struct SelectQuery {
  unsigned long long lower;           // universe: keys >= lower
  unsigned long long universe_count;  // kUnknownCount unless known
  bool by_mass;                       // top-p (else top-k)
  unsigned long long count_target;    // k
  float top_p;
};

struct SelectResult {
  unsigned long long cut;    // keep keys >= cut
  unsigned long long mass;   // fixed-point mass of the kept entries
  unsigned long long count;  // number of kept entries
};

struct SelectShared {
  unsigned int count[kSelectBins];
  unsigned long long mass[kSelectBins];
  unsigned long long low[256];   // per digit: smallest and largest key seen,
  unsigned long long high[256];  // so the next pass can skip shared bits
  unsigned long long gather_key[kGatherCap];
  unsigned long long gather_mass[kGatherCap];
  unsigned int gather_n;
  SelectResult result;
};

// Entries still in the running for the cut.
struct InPlay {
  unsigned long long lower;
  int bin;                          // -1: any distance bin
  unsigned long long prefix, mask;  // (key & mask) == prefix

  template <typename T>
  __device__ __forceinline__ bool holds(const SelectRow<T>& row, float x,
                                        unsigned long long key) const {
    return key >= lower && (key & mask) == prefix && (bin < 0 || row.bin(x) == bin);
  }
};

// Calls op(x, key) for every valid entry of the row.
template <typename T, typename Op>
__device__ __forceinline__ void visit_entries(const SelectRow<T>& row, Op& op) {
  auto visit = [&](float x, int64_t j) {
    if (x == -BLENDIN_INF) return;
    const int32_t id = row.view.base_id(j);
    if (id >= 0) op(x, rank_key(x, id));
  };
  for_each_entry(row.view.logits, 0, row.view.length, visit);
}

__device__ __forceinline__ void clear_bins(SelectShared& sh, int nbins) {
  for (int b = threadIdx.x; b < nbins; b += kThreads) {
    sh.count[b] = 0u;
    sh.mass[b] = 0ull;
  }
  __syncthreads();
}

// Pass 1: histogram of the universe over distance bins.
template <typename T>
__device__ void histogram_distance(const SelectRow<T>& row, unsigned long long lower,
                                   SelectShared& sh) {
  clear_bins(sh, kSelectBins);
  unsigned int tail_count = 0u;
  unsigned long long tail_mass = 0ull;
  auto op = [&](float x, unsigned long long key) {
    if (key < lower) return;
    const int b = row.bin(x);
    const unsigned long long w = row.weight(x);
    if (b == kSelectBins - 1) {  // the crowded far tail: no shared atomics
      ++tail_count;
      tail_mass += w;
    } else {
      atomicAdd(&sh.count[b], 1u);
      atomicAdd(&sh.mass[b], w);
    }
  };
  visit_entries(row, op);
  if (tail_count > 0u) {
    atomicAdd(&sh.count[kSelectBins - 1], tail_count);
    atomicAdd(&sh.mass[kSelectBins - 1], tail_mass);
  }
  __syncthreads();
}

// Histogram of the next 8-bit key digit (bits [shift, shift + 8)) over the
// entries in play, read from the row (from_row) or from the gathered
// entries in shared memory, with each digit's smallest and largest key.
template <typename T>
__device__ void histogram_digit(const SelectRow<T>& row, const InPlay& in, int shift, bool from_row,
                                SelectShared& sh) {
  for (int b = threadIdx.x; b < 256; b += kThreads) {
    sh.low[b] = ~0ull;
    sh.high[b] = 0ull;
  }
  clear_bins(sh, 256);
  auto add = [&](unsigned long long key, unsigned long long mass) {
    const int d = static_cast<int>((key >> shift) & 255ull);
    atomicAdd(&sh.count[d], 1u);
    atomicAdd(&sh.mass[d], mass);
    atomicMin(&sh.low[d], key);
    atomicMax(&sh.high[d], key);
  };
  if (from_row) {
    auto op = [&](float x, unsigned long long key) {
      if (in.holds(row, x, key)) add(key, row.weight(x));
    };
    visit_entries(row, op);
  } else {
    const unsigned n = sh.gather_n < kGatherCap ? sh.gather_n : kGatherCap;
    for (unsigned i = threadIdx.x; i < n; i += kThreads) {
      const unsigned long long key = sh.gather_key[i];
      if ((key & in.mask) == in.prefix) add(key, sh.gather_mass[i]);  // bin and lower hold
    }
  }
  __syncthreads();
}

// Sums of the bins at positions [0, end) of the rank order (position i is
// bin i, or bin nbins - 1 - i when `descending`).
struct BinSums {
  unsigned long long count, mass;
};

__device__ __forceinline__ int bin_at(int pos, int nbins, bool descending) {
  return descending ? nbins - 1 - pos : pos;
}

__device__ inline BinSums sum_bins_before(const SelectShared& sh, int nbins, bool descending,
                                          int end, ReduceScratch& reduce) {
  unsigned long long count = 0ull, mass = 0ull;
  for (int pos = threadIdx.x; pos < end && pos < nbins; pos += kThreads) {
    const int b = bin_at(pos, nbins, descending);
    count += sh.count[b];
    mass += sh.mass[b];
  }
  BinSums s;
  s.count = block_reduce(count, SumOp{}, reduce);
  s.mass = block_reduce(mass, SumOp{}, reduce);
  return s;
}

// First position at which above + (metric of positions <= it) >= target,
// or -1. nbins is a multiple of kThreads or at most kThreads.
__device__ inline int find_position(const SelectShared& sh, int nbins, bool descending,
                                    bool by_mass, unsigned long long above,
                                    unsigned long long target, ReduceScratch& reduce) {
  const int per = nbins > kThreads ? nbins / kThreads : 1;
  const int first_pos = static_cast<int>(threadIdx.x) * per;
  unsigned long long local = 0ull;
  for (int i = 0; i < per; ++i) {
    const int pos = first_pos + i;
    if (pos < nbins) {
      const int b = bin_at(pos, nbins, descending);
      local += by_mass ? sh.mass[b] : sh.count[b];
    }
  }
  unsigned long long total;
  unsigned long long running = above + block_exclusive_scan(local, total, reduce);
  long long found = INT64_MAX;
  for (int i = 0; i < per; ++i) {
    const int pos = first_pos + i;
    if (pos < nbins && found == INT64_MAX) {
      const int b = bin_at(pos, nbins, descending);
      running += by_mass ? sh.mass[b] : sh.count[b];
      if (running >= target) found = pos;
    }
  }
  found = block_reduce(found, MinOp{}, reduce);
  return found == INT64_MAX ? -1 : static_cast<int>(found);
}

// Narrows `in` to the digit at `shift` that holds the target; returns the
// entries left in play and moves `shift` to the next digit window that
// tells them apart (-1 once their keys are all equal): bits the survivors
// share need no pass of their own.
template <typename T>
__device__ unsigned long long narrow_by_digit(const SelectRow<T>& row, InPlay& in, int& shift,
                                              bool from_row, bool by_mass,
                                              unsigned long long target, BinSums& above,
                                              SelectShared& sh, ReduceScratch& reduce) {
  if (threadIdx.x == 0) BLENDIN_TRACE(from_row ? "select_row_digit" : "select_shared_digit");
  histogram_digit(row, in, shift, from_row, sh);
  int pos =
      find_position(sh, 256, true, by_mass, by_mass ? above.mass : above.count, target, reduce);
  if (pos < 0) pos = 255;  // unreachable: the entries in play hold the target
  const BinSums before = sum_bins_before(sh, 256, true, pos, reduce);
  above.count += before.count;
  above.mass += before.mass;
  const int digit = 255 - pos;
  const unsigned long long left = sh.count[digit];
  const unsigned long long low = sh.low[digit];
  const unsigned long long differ = low ^ sh.high[digit];
  __syncthreads();       // the bins are cleared by the next pass
  if (differ == 0ull) {  // one key left (or several equal ones)
    in.prefix = low;
    in.mask = ~0ull;
    shift = -1;
    return left;
  }
  // Survivors share every bit above top_bit (those are fixed from now on);
  // the next window ends at top_bit (and may repeat fixed bits near bit 0).
  const int top_bit = 63 - __clzll(static_cast<long long>(differ));
  shift = top_bit >= 7 ? top_bit - 7 : 0;
  in.mask = top_bit >= 63 ? 0ull : ~((2ull << top_bit) - 1ull);
  in.prefix = low & in.mask;
  return left;
}

template <typename T>
__device__ void gather_in_play(const SelectRow<T>& row, const InPlay& in, SelectShared& sh) {
  if (threadIdx.x == 0) sh.gather_n = 0u;
  __syncthreads();
  auto op = [&](float x, unsigned long long key) {
    if (!in.holds(row, x, key)) return;
    const unsigned slot = atomicAdd(&sh.gather_n, 1u);
    if (slot < kGatherCap) {
      sh.gather_key[slot] = key;
      sh.gather_mass[slot] = row.weight(x);
    }
  };
  visit_entries(row, op);
  __syncthreads();
}

// Count and mass of the gathered entries in play that rank above `key`.
__device__ __forceinline__ BinSums gathered_above(const SelectShared& sh, unsigned n,
                                                  const InPlay& in, unsigned long long key) {
  BinSums sums{0ull, 0ull};
  for (unsigned j = 0; j < n; ++j) {
    const unsigned long long other = sh.gather_key[j];
    if (other > key && (other & in.mask) == in.prefix) {
      sums.count += 1ull;
      sums.mass += sh.gather_mass[j];
    }
  }
  return sums;
}

// Exact cut among the gathered entries still in play (at most kLocalCap):
// each entry counts the entries that rank before it.
__device__ inline SelectResult select_gathered(const InPlay& in, bool by_mass,
                                               unsigned long long target, const BinSums& above,
                                               SelectShared& sh, ReduceScratch& reduce) {
  const unsigned n = sh.gather_n < kGatherCap ? sh.gather_n : kGatherCap;
  unsigned long long best = 0ull, count = 0ull, mass = 0ull;
  for (unsigned i = threadIdx.x; i < n; i += kThreads) {
    const unsigned long long key = sh.gather_key[i];
    if ((key & in.mask) != in.prefix) continue;
    count += 1ull;
    mass += sh.gather_mass[i];
    const BinSums before = gathered_above(sh, n, in, key);
    const unsigned long long reached =
        by_mass ? above.mass + before.mass + sh.gather_mass[i] : above.count + before.count + 1ull;
    if (reached >= target && key > best) best = key;
  }
  const unsigned long long cut = block_reduce(best, MaxOp{}, reduce);
  if (cut == 0ull) {  // the target is beyond the universe: keep all of it
    if (threadIdx.x == 0) BLENDIN_TRACE("select_keep_all");
    SelectResult all;
    all.cut = in.lower;
    all.count = above.count + block_reduce(count, SumOp{}, reduce);
    all.mass = above.mass + block_reduce(mass, SumOp{}, reduce);
    return all;
  }
  for (unsigned i = threadIdx.x; i < n; i += kThreads) {
    if (sh.gather_key[i] != cut) continue;
    const BinSums before = gathered_above(sh, n, in, cut);
    sh.result = SelectResult{cut, above.mass + before.mass + sh.gather_mass[i],
                             above.count + before.count + 1ull};
  }
  __syncthreads();
  const SelectResult r = sh.result;
  __syncthreads();
  return r;
}

__device__ __forceinline__ unsigned long long mass_target(float top_p, unsigned long long total) {
  const double need = ceil(static_cast<double>(top_p) * static_cast<double>(total));
  const unsigned long long t = static_cast<unsigned long long>(need);
  return t > 0ull ? t : 1ull;
}

template <typename T>
__device__ SelectResult select_cut(const SelectRow<T>& row, const SelectQuery& q, SelectShared& sh,
                                   ReduceScratch& reduce) {
  InPlay in{q.lower, -1, 0ull, 0ull};
  BinSums above{0ull, 0ull};
  unsigned long long target = q.count_target;
  unsigned long long left = q.universe_count;
  if (threadIdx.x == 0) BLENDIN_TRACE(q.by_mass ? "select_top_p" : "select_top_k");
  if (left > static_cast<unsigned long long>(kGatherCap)) {
    if (threadIdx.x == 0) BLENDIN_TRACE("select_distance_pass");
    histogram_distance(row, q.lower, sh);
    const BinSums total = sum_bins_before(sh, kSelectBins, false, kSelectBins, reduce);
    if (q.by_mass) target = mass_target(q.top_p, total.mass);
    const int pos = find_position(sh, kSelectBins, false, q.by_mass, 0ull, target, reduce);
    if (pos < 0) {  // fewer entries than k: keep all
      if (threadIdx.x == 0) BLENDIN_TRACE("select_keep_all");
      return SelectResult{q.lower, total.mass, total.count};
    }
    above = sum_bins_before(sh, kSelectBins, false, pos, reduce);
    in.bin = pos;
    left = sh.count[pos];
    __syncthreads();
  }
  int shift = 56;
  while (left > static_cast<unsigned long long>(kGatherCap) && shift >= 0) {
    left = narrow_by_digit(row, in, shift, true, q.by_mass, target, above, sh, reduce);
  }
  gather_in_play(row, in, sh);
  if (q.by_mass && q.universe_count <= static_cast<unsigned long long>(kGatherCap)) {
    // gathered the whole universe directly: its mass gives the target
    unsigned long long mass = 0ull;
    const unsigned n = sh.gather_n < kGatherCap ? sh.gather_n : kGatherCap;
    for (unsigned i = threadIdx.x; i < n; i += kThreads) mass += sh.gather_mass[i];
    target = mass_target(q.top_p, block_reduce(mass, SumOp{}, reduce));
  }
  while (left > static_cast<unsigned long long>(kLocalCap) && shift >= 0) {
    left = narrow_by_digit(row, in, shift, false, q.by_mass, target, above, sh, reduce);
  }
  return select_gathered(in, q.by_mass, target, above, sh, reduce);
}

}  // namespace blendin::cuda
