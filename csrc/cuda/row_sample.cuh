// Sampling one row in the finishing block: Philox uniforms (shared
// row_uniforms), the component (guide with probability alpha), then an
// inverse-CDF draw in storage order of that component at temperature T.
//
// Unfiltered: the slice partials locate the slice that holds the target
// (like the CPU's chunks) and only that slice is walked, in double as on the
// CPU. With top-k / top-p the threshold entry in rank order (logit desc,
// ties to the smaller base id) is found exactly by a select over the row
// (select_cut.cuh); the kept entries are then walked in 32.32 fixed point,
// whose sums do not depend on the order of additions.
#pragma once

#include "blendin/philox.h"
#include "device_common.cuh"
#include "row_finish.cuh"
#include "select_cut.cuh"

namespace blendin::cuda {

constexpr int kWalkPerThread = 8;  // consecutive entries per thread and tile

// Walks [begin, end) of a row in storage order and returns the base id of
// the first entry whose cumulative weight exceeds `target` (the last entry
// with weight when rounding leaves the target beyond the sum, as on the
// CPU). weight_of(x, id) is 0 for entries that cannot be drawn.
template <typename T, typename Acc, typename WeightOf>
__device__ int32_t walk_storage_order(const RowView<T>& view, int64_t begin, int64_t end,
                                      Acc target, const WeightOf& weight_of,
                                      ReduceScratch& reduce) {
  long long found = INT64_MAX;
  Acc running = Acc(0);
  for (int64_t tile = begin; tile < end; tile += kThreads * kWalkPerThread) {
    const int64_t mine = tile + static_cast<int64_t>(threadIdx.x) * kWalkPerThread;
    Acc w[kWalkPerThread];
    Acc local = Acc(0);
#pragma unroll
    for (int k = 0; k < kWalkPerThread; ++k) {
      w[k] = Acc(0);
      if (mine + k < end) {
        const int32_t id = view.base_id(mine + k);
        if (id >= 0) w[k] = weight_of(view.at(mine + k), id);
      }
      local = local + w[k];
    }
    Acc tile_total;
    const Acc before = block_exclusive_scan(local, tile_total, reduce);
    if (running + tile_total > target) {  // same decision in every thread
      Acc cumulative = running + before;
      long long first = INT64_MAX;
#pragma unroll
      for (int k = 0; k < kWalkPerThread; ++k) {
        if (w[k] > Acc(0)) {
          cumulative = cumulative + w[k];
          if (first == INT64_MAX && cumulative > target) first = mine + k;
        }
      }
      found = block_reduce(first, MinOp{}, reduce);
      if (found != INT64_MAX) break;
    }
    running = running + tile_total;
  }
  if (found == INT64_MAX) {
    if (threadIdx.x == 0) BLENDIN_TRACE("walk_last_positive");
    long long last = -1;
    for (int64_t j = begin + threadIdx.x; j < end; j += kThreads) {
      const int32_t id = view.base_id(j);
      if (id >= 0 && weight_of(view.at(j), id) > Acc(0)) last = j;
    }
    found = block_reduce(last, MaxOp{}, reduce);
  }
  return found >= 0 ? view.base_id(found) : -1;
}

// Weights of the unfiltered walk: the CPU's float weight, summed in double.
template <typename T>
struct PlainWeight {
  float max;
  float inv_temperature;
  __device__ __forceinline__ double operator()(float x, int32_t /*id*/) const {
    return static_cast<double>(fast_exp((x - max) * inv_temperature));
  }
};

// Weights of the filtered walk: fixed point, zero past the cut.
struct KeptWeight {
  float max;
  float inv_temperature;
  unsigned long long cut;
  __device__ __forceinline__ unsigned long long operator()(float x, int32_t id) const {
    if (x == -BLENDIN_INF || rank_key(x, id) < cut) return 0ull;
    return fixed_weight((x - max) * inv_temperature);
  }
};

// Shared memory of the unfiltered draw: slice masses and their prefix.
struct SliceMassShared {
  double mass[kMaxSlicesPerModel];
  double before[kMaxSlicesPerModel];
  int chosen;
  double remainder;
};

// Warp 0 picks the slice that holds u * (component mass) the way the CPU
// picks its chunk: sh.chosen and the target's remainder within it. Slices
// are in storage order; the caller synchronises before reading sh.
__device__ inline void pick_slice(const SlicePartial* parts, int32_t num_slices, float max,
                                  float inv_t, float u, SliceMassShared& sh) {
  if (warp_id() == 0) {
    double carry = 0.0;
    for (int base = 0; base < num_slices; base += 32) {
      const int s = base + lane_id();
      double mass = 0.0;
      if (s < num_slices) {
        const float slice_max = load_cg(&parts[s].softmax.max);
        if (slice_max != -BLENDIN_INF) {
          mass = static_cast<double>(load_cg(&parts[s].softmax.sum_tempered)) *
                 fast_exp((slice_max - max) * inv_t);
        }
      }
      double inclusive = mass;
#pragma unroll
      for (int delta = 1; delta < 32; delta <<= 1) {
        const double up = __shfl_up_sync(kFullMask, inclusive, delta);
        if (lane_id() >= delta) inclusive += up;
      }
      double exclusive = __shfl_up_sync(kFullMask, inclusive, 1);
      if (lane_id() == 0) exclusive = 0.0;
      if (s < num_slices) {
        sh.mass[s] = mass;
        sh.before[s] = carry + exclusive;
      }
      carry += __shfl_sync(kFullMask, inclusive, 31);
    }
    const double target = static_cast<double>(u) * carry;
    unsigned first = 0xffffffffu;
    unsigned last_nonempty = 0;
    for (int s = lane_id(); s < num_slices; s += 32) {
      if (sh.mass[s] > 0.0) {
        last_nonempty = static_cast<unsigned>(s) > last_nonempty ? s : last_nonempty;
        if (target < sh.before[s] + sh.mass[s] && static_cast<unsigned>(s) < first) first = s;
      }
    }
    first = __reduce_min_sync(kFullMask, first);
    last_nonempty = __reduce_max_sync(kFullMask, last_nonempty);
    if (lane_id() == 0) {
      sh.chosen = first != 0xffffffffu ? static_cast<int>(first) : static_cast<int>(last_nonempty);
      sh.remainder = target - sh.before[sh.chosen];
    }
  }
}

// Picks the slice (pick_slice), then walks only that slice.
template <typename T>
__device__ int32_t draw_unfiltered(const RowView<T>& view, const SlicePartial* parts,
                                   int32_t num_slices, int64_t slice_elems, float max, float inv_t,
                                   float u, SliceMassShared& sh, ReduceScratch& reduce) {
  pick_slice(parts, num_slices, max, inv_t, u, sh);
  __syncthreads();
  const int64_t begin = sh.chosen * slice_elems;
  const int64_t end = begin + slice_elems < view.length ? begin + slice_elems : view.length;
  const double remainder = sh.remainder;
  return walk_storage_order(view, begin, end, remainder, PlainWeight<T>{max, inv_t}, reduce);
}

// floor(u * total) for u = k / 2^24 (the Philox uniform), exactly.
__device__ __forceinline__ unsigned long long scale_by_uniform(float u, unsigned long long total) {
  const unsigned long long k = static_cast<unsigned long long>(u * 16777216.0f);
  return (total >> 24) * k + (((total & 0xffffffull) * k) >> 24);
}

// The component's top-K list (best first, from the merged slice lists: the
// exact top-K of the row) and its tempered mass relative to its max.
struct ComponentTop {
  const float* value;
  const int32_t* id;
  float sum_tempered;
};

// The cut straight from the top-K list when it lies there: top-k <= kTopK
// (then top-p within those), or top-p alone reached inside the list (its
// threshold from the float mass of the statistics pass). False otherwise.
__device__ inline bool cut_from_list(const ComponentTop& top, float max, float inv_t, int32_t top_k,
                                     float top_p, int64_t length, SelectResult& out) {
  int n = 0;  // valid entries in the list; fewer than kTopK means all of the row's
  while (n < kTopK && top.value[n] != -BLENDIN_INF) ++n;
  const bool full = n == kTopK;
  const bool k_active = top_k > 0 && top_k < length;
  int universe = n;  // the top-k set (or every valid entry) when the list holds it
  if (k_active && top_k <= n) {
    universe = top_k;
  } else if (full) {
    if (k_active || !(top_p < 1.0f)) return false;  // the set reaches past the list
    universe = -1;  // top-p over the whole row: threshold from the float mass
  }
  unsigned long long need = ~0ull;  // without top-p: the last entry of the set
  if (top_p < 1.0f) {
    if (universe < 0) {
      need = static_cast<unsigned long long>(
          ceil(static_cast<double>(top_p) * static_cast<double>(top.sum_tempered) * 4294967296.0));
    } else {
      unsigned long long total = 0ull;
      for (int i = 0; i < universe; ++i) total += fixed_weight((top.value[i] - max) * inv_t);
      need = mass_target(top_p, total);
    }
  }
  const int entries = universe < 0 ? n : universe;
  unsigned long long cumulative = 0ull;
  for (int i = 0; i < entries; ++i) {
    cumulative += fixed_weight((top.value[i] - max) * inv_t);
    if (cumulative >= need || (need == ~0ull && i == entries - 1)) {
      out = SelectResult{rank_key(top.value[i], top.id[i]), cumulative,
                         static_cast<unsigned long long>(i + 1)};
      return true;
    }
  }
  return false;  // top-p not reached within the list
}

// The block alone: top-k, then top-p, each cut by an exact select over the
// row, then the walk over the kept entries.
template <typename T>
__device__ int32_t draw_by_select(const RowView<T>& view, float max, float inv_t, int32_t top_k,
                                  float top_p, float u, SelectShared& sh, ReduceScratch& reduce) {
  const SelectRow<T> row{view, max, inv_t};
  SelectResult kept{0ull, 0ull, kUnknownCount};
  if (top_k > 0 && top_k < view.length) {
    kept = select_cut(
        row, SelectQuery{0ull, kUnknownCount, false, static_cast<unsigned long long>(top_k), 1.0f},
        sh, reduce);
  }
  if (top_p < 1.0f) {
    kept = select_cut(row, SelectQuery{kept.cut, kept.count, true, 0ull, top_p}, sh, reduce);
  }
  const unsigned long long target = scale_by_uniform(u, kept.mass);
  return walk_storage_order(view, 0, view.length, target, KeptWeight{max, inv_t, kept.cut}, reduce);
}

// top-k, then top-p, then the walk over the kept entries.
template <typename T>
__device__ int32_t draw_filtered(const RowView<T>& view, const ComponentTop& top, float max,
                                 float inv_t, int32_t top_k, float top_p, float u, SelectShared& sh,
                                 ReduceScratch& reduce) {
  if (threadIdx.x == 0) {
    SelectResult from_list;
    const bool found = cut_from_list(top, max, inv_t, top_k, top_p, view.length, from_list);
    sh.result = found ? from_list : SelectResult{0ull, 0ull, 0ull};
    if (found) BLENDIN_TRACE("select_from_list");
  }
  __syncthreads();
  const SelectResult kept = sh.result;
  __syncthreads();
  if (kept.count == 0ull) return draw_by_select(view, max, inv_t, top_k, top_p, u, sh, reduce);
  const unsigned long long target = scale_by_uniform(u, kept.mass);
  return walk_storage_order(view, 0, view.length, target, KeptWeight{max, inv_t, kept.cut}, reduce);
}

// Shared state of the sampling decision.
struct SampleShared {
  float u_token;
  int use_guide;
};

template <typename T>
__device__ void sample_row(const RowContext<T>& ctx, const StepParams& p, RowShared& rs,
                           SampleShared& ss, SliceMassShared& mass_sh, SelectShared& select_sh,
                           ReduceScratch& reduce) {
  const int64_t row = ctx.row;
  if (threadIdx.x == 0) {
    const RowUniforms u = row_uniforms(static_cast<uint64_t>(p.seed.at(row)),
                                       static_cast<uint64_t>(p.offset.at(row)), p.rng_stream(row));
    ss.u_token = u.token;
    ss.use_guide = u.component < rs.alpha;
  }
  __syncthreads();
  const bool use_guide = ss.use_guide;
  const RowView<T> view = use_guide ? ctx.guide : ctx.base;
  const float max = use_guide ? rs.guide.max : rs.base.max;
  const int32_t top_k = p.top_k.at(row);
  const float top_p = p.top_p.at(row);
  const bool filtered = (top_k > 0 && top_k < view.length) || top_p < 1.0f;
  int32_t token;
  if (threadIdx.x == 0) BLENDIN_TRACE(filtered ? "sample_filtered" : "sample_unfiltered");
  if (filtered) {
    const ComponentTop top{use_guide ? rs.guide_top_value : rs.base_top_value,
                           use_guide ? rs.guide_top_id : rs.base_top_id,
                           use_guide ? rs.guide.sum_tempered : rs.base.sum_tempered};
    token = draw_filtered(view, top, max, ctx.inv_temperature, top_k, top_p, ss.u_token, select_sh,
                          reduce);
  } else {
    const SlicePartial* parts = ctx.partials + (use_guide ? ctx.base_slices : 0);
    const int32_t slices = use_guide ? ctx.guide_slices : ctx.base_slices;
    token = draw_unfiltered(view, parts, slices, ctx.slice_elems, max, ctx.inv_temperature,
                            ss.u_token, mass_sh, reduce);
  }
  if (threadIdx.x == 0) p.out.tokens[row] = token;
}

}  // namespace blendin::cuda
