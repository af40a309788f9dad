// Exact top-k / top-p sampling spread over a row's team (cooperative
// kernel), for cuts the top-K list cannot settle. Entries are ranked by
// rank_key() and binned by distance from the component's max
// (SelectRow::bin, as in select_cut.cuh); masses are 32.32 fixed point, so
// every sum is exact and independent of the order of additions.
//
//  1. leader: from the component's sub-block maxima, the last distance bin
//     a kept entry can lie in (the k-th largest sub-block max bounds the
//     top-k cut; the largest maxima whose own mass reaches top_p bound the
//     nucleus): only sub-blocks whose max reaches it are read below;
//  2. members: histogram of those sub-blocks' entries into the row's bins
//     (global atomics) -- barrier -- leader: the bin of the cut;
//  3. members: per sub-block, the mass of the entries surely kept (bins
//     before the cut's), and the keys of the cut's bin (all bins up to
//     the top-k cut when top-p follows top-k) gathered;
//  4. the last member: sorts the gathered keys, finds the exact cut, adds
//     the kept gathered entries to their sub-blocks, locates the sub-block
//     that holds u * (kept mass) and walks only it, in storage order.
// More gathered keys than kCoopGatherCap (thousands of near-equal logits)
// fall back to the exact select of one block (draw_by_select).
#pragma once

#include "coop_plan.h"
#include "coop_stats.cuh"
#include "coop_sync.cuh"
#include "device_common.cuh"
#include "row_sample.cuh"
#include "select_cut.cuh"

namespace blendin::cuda {

// Sub-blocks of one model row that a member reads in a team-wide pass:
// warp w of member m takes m * kWarps + w, then every team * kWarps-th.
struct TeamStride {
  int64_t first;
  int64_t step;
};

__device__ __forceinline__ TeamStride team_stride(const Team& team) {
  return TeamStride{static_cast<int64_t>(team.member) * kWarps + warp_id(),
                    static_cast<int64_t>(team.size) * kWarps};
}

// Calls f(x, key, j) for every valid entry of a lane's vector of sub-block sb.
template <typename T, typename F>
__device__ __forceinline__ void for_lane_entries(const SelectRow<T>& row, int64_t sb, F&& f) {
  constexpr int kVec = VecTraits<T>::kSize;
  const int64_t j = sb * 32 * kVec + lane_id() * kVec;
  const bool aligned = (reinterpret_cast<uintptr_t>(row.view.logits) & 15u) == 0u;
  float x[kVec];
  unpack_vec<T>(load_lane_vector(row.view.logits, row.view.length, j, aligned), x);
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    if (x[k] == -BLENDIN_INF || !(x[k] < BLENDIN_INF))
      continue;  // padding, masked (bad rows never get here)
    const int32_t id = row.view.base_id(j + k);
    if (id >= 0) f(x[k], rank_key(x[k], id), j + k);
  }
}

// ceil(top_p * Z) in 32.32 fixed point, Z the component's tempered mass
// relative to its max (the statistics pass's float sum), as cut_from_list.
__device__ __forceinline__ unsigned long long nucleus_need(float top_p, float z_tempered) {
  return static_cast<unsigned long long>(
      ceil(static_cast<double>(top_p) * static_cast<double>(z_tempered) * 4294967296.0));
}

// 1. (leader) The last bin a kept entry can lie in, from the sub-block maxima.
template <typename T>
__device__ int select_bound_bin(const SelectRow<T>& row, const float* sb_max, int64_t subblocks,
                                int32_t top_k, float top_p, float z_tempered, SelectShared& sh,
                                ReduceScratch& reduce) {
  clear_bins(sh, kSelectBins);
  for (int64_t sb = threadIdx.x; sb < subblocks; sb += kThreads) {
    const float m = load_cg(sb_max + sb);
    if (m == -BLENDIN_INF) continue;
    atomicAdd(&sh.count[row.bin(m)], 1u);
    atomicAdd(&sh.mass[row.bin(m)], row.weight(m));
  }
  __syncthreads();
  const bool k_active = top_k > 0 && top_k < row.view.length;
  const int pos = k_active ? find_position(sh, kSelectBins, false, false, 0ull,
                                           static_cast<unsigned long long>(top_k), reduce)
                           : find_position(sh, kSelectBins, false, true, 0ull,
                                           nucleus_need(top_p, z_tempered), reduce);
  __syncthreads();
  return pos < 0 ? kSelectBins - 1 : pos;
}

// 2. (members) Histogram of the entries of sub-blocks reaching the bound.
template <typename T>
__device__ void select_histogram(const SelectRow<T>& row, const float* sb_max, int64_t subblocks,
                                 int bound, const Team& team, SelectShared& sh) {
  clear_bins(sh, kSelectBins);
  const TeamStride s = team_stride(team);
  for (int64_t sb = s.first; sb < subblocks; sb += s.step) {
    const float m = load_cg(sb_max + sb);
    if (m == -BLENDIN_INF || row.bin(m) > bound) continue;  // warp-uniform
    for_lane_entries(row, sb, [&](float x, unsigned long long, int64_t) {
      atomicAdd(&sh.count[row.bin(x)], 1u);
      atomicAdd(&sh.mass[row.bin(x)], row.weight(x));
    });
  }
  __syncthreads();
  for (int b = threadIdx.x; b < kSelectBins; b += kThreads) {
    if (sh.count[b] == 0u) continue;
    atomicAdd(&team.sync->bin_count[b], sh.count[b]);
    atomicAdd(&team.sync->bin_mass[b], sh.mass[b]);
  }
}

// 2'. (leader of the second barrier) The bins to gather, and what lies before them.
__device__ inline void select_cut_bins(const CoopSync* words, int32_t top_k, float top_p,
                                       float z_tempered, int64_t length, CoopDecision& d,
                                       SelectShared& sh, ReduceScratch& reduce) {
  for (int b = threadIdx.x; b < kSelectBins; b += kThreads) {
    sh.count[b] = load_cg(&words->bin_count[b]);
    sh.mass[b] = load_cg(&words->bin_mass[b]);
  }
  __syncthreads();
  const bool k_active = top_k > 0 && top_k < length;
  const int pos = k_active ? find_position(sh, kSelectBins, false, false, 0ull,
                                           static_cast<unsigned long long>(top_k), reduce)
                           : find_position(sh, kSelectBins, false, true, 0ull,
                                           nucleus_need(top_p, z_tempered), reduce);
  if (pos < 0) {  // fewer entries than k (or rounding left the nucleus short): keep all
    d.gather_lo = d.gather_hi = kSelectBins;
  } else if (k_active && top_p < 1.0f) {  // the whole top-k set, for the top-p cut inside it
    d.gather_lo = 0;
    d.gather_hi = pos;
  } else {
    d.gather_lo = d.gather_hi = pos;
  }
  const BinSums above = sum_bins_before(sh, kSelectBins, false, d.gather_lo, reduce);
  d.above_count = above.count;
  d.above_mass = above.mass;
  __syncthreads();
}

// 3. (members) Surely kept mass per sub-block, and the keys to decide on.
template <typename T>
__device__ void select_gather(const SelectRow<T>& row, const float* sb_max, int64_t subblocks,
                              const CoopDecision& d, const Team& team, unsigned long long* kept_sb,
                              unsigned long long* gather) {
  const TeamStride s = team_stride(team);
  for (int64_t sb = s.first; sb < subblocks; sb += s.step) {
    const float m = load_cg(sb_max + sb);
    unsigned long long kept = 0ull;
    if (m != -BLENDIN_INF && row.bin(m) <= d.gather_hi) {  // warp-uniform
      for_lane_entries(row, sb, [&](float x, unsigned long long key, int64_t) {
        const int b = row.bin(x);
        if (b < d.gather_lo) {
          kept += row.weight(x);
        } else if (b <= d.gather_hi) {
          const unsigned int slot = atomicAdd(&team.sync->gathered, 1u);
          if (slot < static_cast<unsigned int>(kCoopGatherCap)) gather[slot] = key;
        }
      });
#pragma unroll
      for (int mask = 16; mask > 0; mask >>= 1) kept += __shfl_xor_sync(kFullMask, kept, mask);
    }
    if (lane_id() == 0) kept_sb[sb] = kept;
  }
}

__device__ __forceinline__ float key_logit(unsigned long long key) {
  return key_value(static_cast<uint32_t>(key >> 32));
}
__device__ __forceinline__ int32_t key_id(unsigned long long key) {
  return 0x7fffffff - static_cast<int32_t>(key & 0xffffffffull);
}

// Sorts keys[0, n) in descending order (n <= kCoopGatherCap; the rest of the
// power-of-two range is padded with 0, below every valid key).
__device__ inline void sort_keys_descending(unsigned long long* keys, int n) {
  int size = 1;
  while (size < n) size <<= 1;
  for (int i = n + threadIdx.x; i < size; i += kThreads) keys[i] = 0ull;
  for (int width = 2; width <= size; width <<= 1) {
    for (int stride = width >> 1; stride > 0; stride >>= 1) {
      __syncthreads();
      for (int i = threadIdx.x; i < size / 2; i += kThreads) {
        const int lo = 2 * i - (i & (stride - 1));
        const int hi = lo + stride;
        const bool descending = (lo & width) == 0;
        const unsigned long long a = keys[lo], b = keys[hi];
        if ((a < b) == descending) {
          keys[lo] = b;
          keys[hi] = a;
        }
      }
    }
  }
  __syncthreads();
}

struct RankCut {
  int index;                // rank of the cut entry, -1 if not reached
  unsigned long long mass;  // base_mass + the mass of ranks [0, index]
};

// Over sorted keys: the first rank at which base_mass + cumulative mass
// reaches `need` (by_mass) or the rank `need` itself (by count).
template <typename T>
__device__ RankCut rank_cut(const unsigned long long* keys, int n, const SelectRow<T>& row,
                            unsigned long long base_mass, bool by_mass, unsigned long long need,
                            RankCut& shared_result, ReduceScratch& reduce) {
  constexpr int kPer = kCoopGatherCap / kThreads;
  const int first = static_cast<int>(threadIdx.x) * kPer;
  unsigned long long local = 0ull;
  for (int k = 0; k < kPer && first + k < n; ++k) local += row.weight(key_logit(keys[first + k]));
  unsigned long long total;
  unsigned long long running = base_mass + block_exclusive_scan(local, total, reduce);
  long long found = INT64_MAX;
  unsigned long long found_mass = 0ull;
  for (int k = 0; k < kPer && first + k < n; ++k) {
    running += row.weight(key_logit(keys[first + k]));
    const bool hit = by_mass ? running >= need : static_cast<unsigned long long>(first + k) == need;
    if (hit && found == INT64_MAX) {
      found = first + k;
      found_mass = running;
    }
  }
  const long long index = block_reduce(found, MinOp{}, reduce);
  if (index != INT64_MAX && found == index)
    shared_result = RankCut{static_cast<int>(index), found_mass};
  if (index == INT64_MAX && threadIdx.x == 0) shared_result = RankCut{-1, running};
  __syncthreads();
  const RankCut r = shared_result;
  __syncthreads();
  return r;
}

// Storage index of a kept entry's base id (its place in the component row).
template <typename T>
__device__ __forceinline__ int64_t storage_index(const RowView<T>& view, int32_t id) {
  return view.mapped ? view.map.guide_of(id) : id;
}

// Shared memory of the finisher.
struct SelectFinishShared {
  unsigned long long keys[kCoopGatherCap];
  RankCut cut;
  int chosen;
  unsigned long long remainder;
};

// 4. (the last member) The exact cut among the gathered keys, then the walk
// of the one sub-block that holds the target. Returns the token.
template <typename T>
__device__ int32_t select_finish(const SelectRow<T>& row, const CoopDecision& d, int32_t top_k,
                                 float top_p, float z_tempered, int64_t subblocks,
                                 unsigned long long* kept_sb, const unsigned long long* gather,
                                 unsigned int gathered, SelectFinishShared& sh,
                                 ReduceScratch& reduce) {
  const int n = static_cast<int>(gathered);
  for (int i = threadIdx.x; i < n; i += kThreads) sh.keys[i] = load_cg(gather + i);
  sort_keys_descending(sh.keys, n);
  unsigned long long cut = 0ull, kept_mass = d.above_mass;  // keep all: every valid key > 0
  if (d.gather_lo >= kSelectBins && threadIdx.x == 0) BLENDIN_TRACE("coop_select_keep_all");
  if (d.gather_lo < kSelectBins) {
    const bool k_active = top_k > 0 && top_k < row.view.length;
    RankCut c;
    if (k_active && top_p < 1.0f) {  // everything up to the top-k cut was gathered
      c = rank_cut(sh.keys, n, row, 0ull, false, static_cast<unsigned long long>(top_k - 1), sh.cut,
                   reduce);
      c = rank_cut(sh.keys, c.index + 1, row, 0ull, true, mass_target(top_p, c.mass), sh.cut,
                   reduce);
    } else if (k_active) {
      c = rank_cut(sh.keys, n, row, d.above_mass, false,
                   static_cast<unsigned long long>(top_k) - d.above_count - 1ull, sh.cut, reduce);
    } else {
      c = rank_cut(sh.keys, n, row, d.above_mass, true, nucleus_need(top_p, z_tempered), sh.cut,
                   reduce);
      if (c.index < 0) c = RankCut{n - 1, c.mass};  // rounding: the whole bin
    }
    cut = sh.keys[c.index];
    kept_mass = c.mass;
    for (int i = threadIdx.x; i <= c.index; i += kThreads) {  // kept gathered entries
      const int64_t j = storage_index(row.view, key_id(sh.keys[i]));
      atomicAdd(&kept_sb[j / (32 * VecTraits<T>::kSize)], row.weight(key_logit(sh.keys[i])));
    }
    __threadfence();
    __syncthreads();
  }
  // the sub-block holding the target, then a walk of it alone
  const unsigned long long target = scale_by_uniform(d.u_token, kept_mass);
  unsigned long long carry = 0ull;
  if (threadIdx.x == 0) sh.chosen = -1;
  for (int64_t tile = 0; tile < subblocks; tile += kThreads) {
    const int64_t sb = tile + threadIdx.x;
    const unsigned long long mass = sb < subblocks ? load_cg(kept_sb + sb) : 0ull;
    unsigned long long total;
    const unsigned long long before = carry + block_exclusive_scan(mass, total, reduce);
    if (mass > 0ull && target >= before && target < before + mass) {
      sh.chosen = static_cast<int>(sb);
      sh.remainder = target - before;
    }
    carry += total;
    __syncthreads();
    if (sh.chosen >= 0) break;
  }
  const int chosen = sh.chosen;
  const unsigned long long remainder = sh.remainder;
  __syncthreads();
  if (chosen < 0) return -1;  // unreachable: target < kept mass
  const int64_t sub = 32 * VecTraits<T>::kSize;
  const int64_t begin = chosen * sub;
  const int64_t end = begin + sub < row.view.length ? begin + sub : row.view.length;
  return walk_storage_order(row.view, begin, end, remainder,
                            KeptWeight{row.max, row.inv_temperature, cut}, reduce);
}

}  // namespace blendin::cuda
