// The statistics pass of the cooperative kernel: one member's part of a
// base or guide row, read once with 16-byte loads, kept lean so that four
// blocks fit on an SM (<= 64 registers):
//
//  - per thread only a running max and the sums (no candidate list): a NaN
//    turns the sum into NaN (fast_exp_keep_nan) and +inf the max, so bad
//    rows need no compare of their own;
//  - per sub-block (one warp-wide load) its maximum, one warp reduction,
//    written to the workspace for the later phases;
//  - the part's top-K afterwards, from the sub-blocks whose maximum reaches
//    the K-th largest sub-block maximum (only they can hold a top-K entry):
//    usually K sub-blocks, read again from L1/L2.
#pragma once

#include "coop_plan.h"
#include "device_common.cuh"
#include "slice_stats.cuh"

namespace blendin::cuda {

// Sub-blocks in flight per warp: four for plain rows; two under a map, whose
// per-entry map loads need the registers (and keep loads in flight anyway).
template <bool kMapped>
constexpr int coop_unroll() {
  return kMapped ? 2 : 4;
}

// The bits of -inf in a 16-bit storage type (padding of partial loads).
template <typename T>
__device__ __forceinline__ uint16_t neg_inf_half_bits();
template <>
__device__ __forceinline__ uint16_t neg_inf_half_bits<__half>() {
  return 0xfc00u;
}
template <>
__device__ __forceinline__ uint16_t neg_inf_half_bits<__nv_bfloat16>() {
  return 0xff80u;
}

// Lane `lane`'s vector of sub-block `sb` of a row: one 16-byte load when the
// row is 16-byte aligned and the vector lies inside it, else element by
// element with -inf past the end. Emulated runs count the bytes.
template <typename T>
__device__ __forceinline__ uint4 load_lane_vector(const T* row, int64_t length, int64_t first,
                                                  bool aligned) {
  constexpr int kVec = VecTraits<T>::kSize;
  if (aligned && first + kVec <= length) {
    BLENDIN_COUNT_READ(row + first, 16);
    return __ldg(reinterpret_cast<const uint4*>(row + first));
  }
  // Built with shifts, not through a pointer into `raw`, which would put it
  // (and the hot loop's loads) in local memory.
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (sizeof(T) == 4) {
      w[i] = first + i < length ? __float_as_uint(to_float(row[first + i])) : 0xff800000u;
    } else {
      const uint16_t* bits = reinterpret_cast<const uint16_t*>(row);
      const int64_t lo = first + 2 * i, hi = lo + 1;
      const uint32_t lo_bits = lo < length ? bits[lo] : neg_inf_half_bits<T>();
      const uint32_t hi_bits = hi < length ? bits[hi] : neg_inf_half_bits<T>();
      w[i] = lo_bits | (hi_bits << 16);
    }
  }
  const uint4 raw = make_uint4(w[0], w[1], w[2], w[3]);
#if defined(BLENDIN_CUDA_EMULATION)
  const int64_t valid = length - first < kVec ? (length - first > 0 ? length - first : 0) : kVec;
  BLENDIN_COUNT_READ(row + first, valid * static_cast<int64_t>(sizeof(T)));
#endif
  return raw;
}

// A lane's entries of one sub-block as base-vocabulary logits: unchanged for
// the base (and an unmapped guide); under a map, entries without a base twin
// become -inf and an out-of-range map entry marks the part bad.
template <typename T, bool kMapped>
__device__ __forceinline__ void lane_logits(const RowView<T>& row, const uint4& raw, int64_t first,
                                            float (&x)[VecTraits<T>::kSize], int& bad) {
  constexpr int kVec = VecTraits<T>::kSize;
  unpack_vec<T>(raw, x);
  if constexpr (kMapped) {
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      bad |= is_bad_logit(x[k]) ? 1 : 0;  // a NaN anywhere in the row makes it bad
      const int64_t b = first + k < row.length ? row.map.base_of(first + k) : -1;
      bad |= (b < -1 || b >= row.base_vocab) ? 1 : 0;
      x[k] = (b >= 0 && b < row.base_vocab) ? x[k] : -BLENDIN_INF;
    }
  }
}

// Merges every thread's list (consumed) into the block's top-K, left in
// scratch.top_value[0] / top_id[0] (best first) for every thread to read
// until the next use of `scratch`.
__device__ __forceinline__ void block_topk(RegTopK& t, SliceScratch& scratch) {
  float v;
  int32_t d;
  warp_topk_merge(t, v, d);
  if (lane_id() < kTopK) {
    scratch.top_value[warp_id()][lane_id()] = v;
    scratch.top_id[warp_id()][lane_id()] = d;
  }
  __syncthreads();
  if (warp_id() == 0) {
    auto load = [&](int i, float& lv, int32_t& ld) {
      lv = scratch.top_value[i / kTopK][i % kTopK];
      ld = scratch.top_id[i / kTopK][i % kTopK];
    };
    warp_topk_of_entries(kWarps * kTopK, load, v, d);  // every lane has loaded before it merges
    if (lane_id() < kTopK) {
      scratch.top_value[0][lane_id()] = v;
      scratch.top_id[0][lane_id()] = d;
    }
  }
  __syncthreads();
}

// Per-thread running statistics of the pass.
struct LeanSums {
  float max = -BLENDIN_INF;
  float sum = 0.0f;
  float sum_tempered = 0.0f;
};

template <bool kTempered, int kVec>
__device__ __forceinline__ void lean_add(LeanSums& acc, const float (&x)[kVec], float vmax,
                                         float inv_t) {
  if (vmax > acc.max) {  // rescale to the new maximum (rare after the first loads)
    acc.sum *= fast_exp(acc.max - vmax);
    if (kTempered) acc.sum_tempered *= fast_exp((acc.max - vmax) * inv_t);
    acc.max = vmax;
  }
  // An all -inf vector adds nothing; measuring from 0 keeps -inf - -inf (NaN) out.
  const float m = acc.max == -BLENDIN_INF ? 0.0f : acc.max;
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    acc.sum += fast_exp_keep_nan(x[k] - m);
    if (kTempered) acc.sum_tempered += fast_exp_keep_nan((x[k] - m) * inv_t);
  }
}

// Streams sub-blocks [first, last) of `row`: sums, and each sub-block's max
// into sb_max[sb]. Returns the block's partial (max, sums, bad; argmax unset)
// in every thread.
template <typename T, bool kMapped, bool kTempered>
__device__ SoftmaxPartial lean_part_pass(const RowView<T>& row, int64_t first, int64_t last,
                                         float inv_t, float* sb_max, SliceScratch& scratch,
                                         ReduceScratch& reduce) {
  constexpr int kVec = VecTraits<T>::kSize;
  constexpr int64_t kSub = 32 * kVec;
  constexpr int kCoopUnroll = coop_unroll<kMapped>();
  const bool aligned = (reinterpret_cast<uintptr_t>(row.logits) & 15u) == 0u;
  LeanSums acc;
  int bad = 0;
  // BEGIN STREAMING LOOP (tests/cuda/static_figures.py: no local memory in here)
  for (int64_t sb0 = first + warp_id(); sb0 < last; sb0 += kWarps * kCoopUnroll) {
    uint4 raw[kCoopUnroll];
#pragma unroll
    for (int u = 0; u < kCoopUnroll; ++u) {
      const int64_t sb = sb0 + u * kWarps;
      if (sb < last)
        raw[u] = load_lane_vector(row.logits, row.length, sb * kSub + lane_id() * kVec, aligned);
    }
#pragma unroll
    for (int u = 0; u < kCoopUnroll; ++u) {
      const int64_t sb = sb0 + u * kWarps;
      if (sb < last) {  // warp-uniform
        float x[kVec];
        lane_logits<T, kMapped>(row, raw[u], sb * kSub + lane_id() * kVec, x, bad);
        float vmax = -BLENDIN_INF;
#pragma unroll
        for (int k = 0; k < kVec; ++k) vmax = fmaxf(vmax, x[k]);  // NaN is skipped
        const uint32_t key = __reduce_max_sync(kFullMask, order_key(vmax));
        if (lane_id() == 0) sb_max[sb] = key_value(key);
        lean_add<kTempered>(acc, x, vmax, inv_t);
      }
    }
  }
  // END STREAMING LOOP
  // The block's max first, then every thread's sums rescaled to it.
  const uint32_t warp_key = __reduce_max_sync(kFullMask, order_key(acc.max));
  if (lane_id() == 0) scratch.top_value[warp_id()][0] = key_value(warp_key);
  __syncthreads();
  float max = scratch.top_value[0][0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) max = fmaxf(max, scratch.top_value[w][0]);
  SoftmaxPartial mine{acc.max, acc.sum, kTempered ? acc.sum_tempered : acc.sum, INT32_MAX, bad};
  const RescaledSums sums = block_sum(rescale_to(mine, max, inv_t), reduce);
  SoftmaxPartial out;
  out.max = max;
  out.sum = sums.sum;
  out.sum_tempered = kTempered ? sums.sum_tempered : sums.sum;
  out.argmax = INT32_MAX;
  // NaN left its mark on the sums, +inf on the max (unless masked by a map).
  out.bad = (sums.bad || !(max < BLENDIN_INF) || sums.sum != sums.sum) ? 1 : 0;
  return out;
}

// The block's top-K (block_topk: left in `scratch`) of
// the entries of sub-blocks [first, last): the K-th largest sub-block max is
// a floor every top-K entry reaches, so only sub-blocks reaching it are read.
template <typename T, bool kMapped>
__device__ void lean_part_topk(const RowView<T>& row, int64_t first, int64_t last,
                               const float* sb_max, SliceScratch& scratch) {
  constexpr int kVec = VecTraits<T>::kSize;
  constexpr int64_t kSub = 32 * kVec;
  // 1. the K largest sub-block maxima (ranked like entries, by sub-block index)
  RegTopK t;
  regtopk_clear(t);
  for (int64_t sb = first + threadIdx.x; sb < last; sb += kThreads) {
    regtopk_offer(t, load_cg(sb_max + sb), static_cast<int32_t>(sb - first));
  }
  block_topk(t, scratch);
  const float floor = scratch.top_value[0][kTopK - 1];  // -inf: fewer than K
  __syncthreads();
  // 2. the entries of the sub-blocks that reach that floor
  const bool aligned = (reinterpret_cast<uintptr_t>(row.logits) & 15u) == 0u;
  regtopk_clear(t);
  int bad = 0;
  for (int64_t sb = first + warp_id(); sb < last; sb += kWarps) {
    const float m = load_cg(sb_max + sb);
    if (m == -BLENDIN_INF || m < floor) continue;  // warp-uniform
    const int64_t j = sb * kSub + lane_id() * kVec;
    float x[kVec];
    lane_logits<T, kMapped>(row, load_lane_vector(row.logits, row.length, j, aligned), j, x, bad);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      if (x[k] != -BLENDIN_INF) {  // padding and untwinned entries are -inf
        regtopk_offer(t, x[k], static_cast<int32_t>(kMapped ? row.map.base_of(j + k) : j + k));
      }
    }
  }
  block_topk(t, scratch);
}

}  // namespace blendin::cuda
