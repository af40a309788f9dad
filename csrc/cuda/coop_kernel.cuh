// The cooperative kernel of one BlendIn step (variant "cooperative"): every
// row is worked on by a team of blocks (coop_plan.h) that wait for one
// another, so no phase falls on one block while the rest of the grid idles.
//
//  1. each member streams its part of the row (coop_stats.cuh): sums,
//     sub-block maxima, the part's top-K;
//  2. barrier: the last member to arrive (the leader) merges the parts,
//     decides (shared decide()) and publishes what is left to do;
//  3. greedy rows the candidates cannot settle: every member scores the base
//     sub-blocks that can still hold a winner -- those whose max reaches
//     the bound a token needs to beat the best candidate -- and the last
//     member to finish merges their argmaxes;
//     sampled rows: the leader locates the member whose part holds the
//     target (the parts' masses, as the CPU locates its chunk), and that
//     member walks its part; top-k / top-p cuts taken from the top-K list
//     are walked by the leader over the list itself; other cuts fall back to
//     the leader's exact select over the row (select_cut.cuh).
//
// Same tokens as the other variant and the CPU kernel, except where a float
// sum taken in another order crosses a boundary (see blend_step_kernel.cuh).
#pragma once

#include "blendin/philox.h"
#include "coop_plan.h"
#include "coop_sample.cuh"
#include "coop_stats.cuh"
#include "coop_sync.cuh"
#include "device_common.cuh"
#include "row_finish.cuh"
#include "row_sample.cuh"
#include "select_cut.cuh"

namespace blendin::cuda {

// Sub-blocks [first, last) of one model row that belong to a member.
struct PartRange {
  int64_t first;
  int64_t last;
  __device__ __forceinline__ bool empty() const { return first >= last; }
};

__device__ __forceinline__ PartRange member_part(const CoopArgs& a, int32_t member, bool guide) {
  const int64_t v0 = member * a.member_subblocks;
  const int64_t v1 = v0 + a.member_subblocks;
  const int64_t offset = guide ? a.base_subblocks : 0;
  const int64_t count = guide ? a.guide_subblocks : a.base_subblocks;
  const int64_t first = v0 - offset > 0 ? v0 - offset : 0;
  const int64_t last = v1 - offset < count ? v1 - offset : count;
  return PartRange{first, last > first ? last : first};
}

// Phase 1 for one model: statistics and top-K of the member's part, written
// to its slot (an empty partial when the member has no part of this model).
template <typename T, bool kGuide>
__device__ void coop_part(const RowView<T>& view, PartRange part, float inv_t, bool tempered,
                          float* sb_max, CoopShared& sh, SlicePartial* out) {
  if (part.empty()) {
    if (threadIdx.x == 0) {
      out->softmax = empty_partial();
#pragma unroll
      for (int k = 0; k < kTopK; ++k) {
        out->top_value[k] = -BLENDIN_INF;
        out->top_id[k] = INT32_MAX;
      }
    }
    return;
  }
  SoftmaxPartial stats;
  if (kGuide && view.mapped) {  // only a guide row goes through a map
    stats = tempered ? lean_part_pass<T, true, true>(view, part.first, part.last, inv_t, sb_max,
                                                     sh.u.slice, sh.reduce)
                     : lean_part_pass<T, true, false>(view, part.first, part.last, inv_t, sb_max,
                                                      sh.u.slice, sh.reduce);
    __syncthreads();  // the sub-block maxima are written
    lean_part_topk<T, true>(view, part.first, part.last, sb_max, sh.u.slice);
  } else {
    stats = tempered ? lean_part_pass<T, false, true>(view, part.first, part.last, inv_t, sb_max,
                                                      sh.u.slice, sh.reduce)
                     : lean_part_pass<T, false, false>(view, part.first, part.last, inv_t, sb_max,
                                                       sh.u.slice, sh.reduce);
    __syncthreads();
    lean_part_topk<T, false>(view, part.first, part.last, sb_max, sh.u.slice);
  }
  if (threadIdx.x == 0) {
    stats.argmax = sh.u.slice.top_id[0][0];
    out->softmax = stats;
#pragma unroll
    for (int k = 0; k < kTopK; ++k) {
      out->top_value[k] = sh.u.slice.top_value[0][k];
      out->top_id[k] = sh.u.slice.top_id[0][k];
    }
  }
  __syncthreads();
}

// Greedy bound: a token outside both top-K lists has p_guide <= the guide's
// K-th probability, so it can tie or beat the best candidate only if its base
// logit reaches the returned value (-inf: any token might). Slightly lowered,
// so float rounding can only let extra tokens through (each is scored exactly).
__device__ __forceinline__ float greedy_scan_bound(const RowShared& rs) {
  const float alpha = rs.alpha;
  const float guide_last = rs.guide_top_value[kTopK - 1];
  const float guide_floor =
      guide_last != -BLENDIN_INF ? prob_of(guide_last, rs.guide.max, 1.0f / rs.guide.sum) : 0.0f;
  const float need = (rs.best_candidate.best - alpha * guide_floor) / (1.0f - alpha);
  if (!(need > 0.0f)) return -BLENDIN_INF;
  const float bound = rs.base.max + logf(need * rs.base.sum);
  return bound - (1e-3f + 1e-6f * fabsf(bound));
}

// The leader: merge, decide, and publish the rest of the row's work.
template <typename T>
__device__ void lead_row(const RowContext<T>& ctx, const StepParams& p, const CoopArgs& args,
                         const Team& team, const float* row_sb_max, CoopShared& sh,
                         CoopDecision* published) {
  merge_row_partials(ctx, sh.row);
  decide_row(ctx, p, sh.row);
  const RowShared& rs = sh.row;
  CoopDecision d{};
  d.mode = kCoopDone;
  d.alpha = rs.alpha;
  d.base = rs.base;
  d.guide = rs.guide;
  d.best = rs.best_candidate;
  if (rs.mode == kRowGreedy && !rs.candidates_exact) {
    d.mode = kCoopGreedyScan;
    d.threshold = greedy_scan_bound(rs);
    if (threadIdx.x == 0) BLENDIN_TRACE("coop_greedy_scan");
  } else if (rs.mode == kRowSample) {
    lead_sample(ctx, p, args, team, row_sb_max, sh, d);
  }
  publish_decision(d, published, sh);
}

// A member's share of the greedy scan: base sub-blocks gw, gw + stride, ...
// whose max reaches the bound; returns the block's best token there.
template <typename T>
__device__ MixtureArgmax greedy_scan(const RowContext<T>& ctx, const CoopArgs& args,
                                     const Team& team, const CoopDecision& d, const float* sb_max,
                                     ReduceScratch& reduce) {
  constexpr int kVec = VecTraits<T>::kSize;
  constexpr int64_t kSub = 32 * kVec;
  const bool aligned = (reinterpret_cast<uintptr_t>(ctx.base.logits) & 15u) == 0u;
  const float inv_base_sum = 1.0f / d.base.sum;
  const float inv_guide_sum = 1.0f / d.guide.sum;
  MixtureArgmax mine = mixture_argmax_init();
  const int64_t stride = static_cast<int64_t>(team.size) * kWarps;
  for (int64_t sb = static_cast<int64_t>(team.member) * kWarps + warp_id();
       sb < args.base_subblocks; sb += stride) {
    const float m = load_cg(sb_max + sb);
    if (m == -BLENDIN_INF || m < d.threshold) continue;  // warp-uniform
    const int64_t j = sb * kSub + lane_id() * kVec;
    float x[kVec];
    unpack_vec<T>(load_lane_vector(ctx.base.logits, ctx.base.length, j, aligned), x);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      if (x[k] != -BLENDIN_INF && x[k] >= d.threshold) {
        const float pg = prob_of(guide_logit_of(ctx.guide, j + k), d.guide.max, inv_guide_sum);
        const float q = mixture_prob(d.alpha, pg, prob_of(x[k], d.base.max, inv_base_sum));
        mixture_consider(mine, q, static_cast<int32_t>(j + k));
      }
    }
  }
  return block_mixture_argmax(mine, reduce);
}

// The last member to finish a greedy scan: the best of the members' tokens
// and the best candidate.
__device__ __forceinline__ void finish_greedy_scan(const MixtureArgmax* slots, int32_t team_size,
                                                   const CoopDecision& d, const StepOutputs& out,
                                                   int64_t row) {
  if (warp_id() != 0) return;
  MixtureArgmax best = d.best;
  for (int m = lane_id(); m < team_size; m += 32) {
    mixture_merge(best, MixtureArgmax{load_cg(&slots[m].best), load_cg(&slots[m].token)});
  }
#pragma unroll
  for (int mask = 16; mask > 0; mask >>= 1) mixture_shfl_merge(best, mask);
  if (lane_id() == 0) out.tokens[row] = best.token;
}

template <typename T>
__device__ __forceinline__ RowView<T> base_view(const T* base, const StepParams& p, int64_t row) {
  return RowView<T>{base + row * p.base_row_stride, p.vocab, p.map, false, p.vocab};
}

template <typename T>
__device__ __forceinline__ RowView<T> guide_view(const T* guide, const StepParams& p, int64_t row) {
  return RowView<T>{guide + row * p.guide_row_stride, p.guide_vocab, p.map, p.map.present(),
                    p.vocab};
}

template <typename T>
__device__ void coop_row(const T* base, const T* guide, const StepParams& p, const CoopArgs& args,
                         int64_t lane, int64_t row, Team team, CoopShared& sh) {
  const int64_t subblocks = args.base_subblocks + args.guide_subblocks;
  {  // phase 1; views are rebuilt inside so that nothing else is live in the pass
    const float temperature = p.temperature.at(row);
    const bool tempered = temperature > 0.0f && temperature != 1.0f;
    float* sb_max = args.subblock_max + lane * subblocks;
    SlicePartial* parts = args.partials + lane * 2 * team.size;
    coop_part<T, false>(base_view(base, p, row), member_part(args, team.member, false),
                        inverse_temperature(temperature), tempered, sb_max, sh,
                        parts + team.member);
    coop_part<T, true>(guide_view(guide, p, row), member_part(args, team.member, true),
                       inverse_temperature(temperature), tempered, sb_max + args.base_subblocks, sh,
                       parts + team.size + team.member);
  }
  float* sb_max = args.subblock_max + lane * subblocks;
  const float inv_t = inverse_temperature(p.temperature.at(row));
  RowContext<T> ctx;
  ctx.row = row;
  ctx.base = base_view(base, p, row);
  ctx.guide = guide_view(guide, p, row);
  ctx.partials = args.partials + lane * 2 * team.size;
  ctx.base_slices = team.size;
  ctx.guide_slices = team.size;
  ctx.slice_elems = 0;  // parts are sub-block ranges (member_part), not fixed slices
  ctx.inv_temperature = inv_t;

  CoopDecision* published = args.decisions + lane;
  if (team_arrive(team, 1u, sh.flag)) {
    lead_row(ctx, p, args, team, sb_max, sh, published);
    team_release(team, 1u);
  } else {
    team_wait(team, 1u);
    read_decision(published, sh);
  }
  const CoopDecision d = sh.decision;
  const RowView<T> component = d.use_guide ? ctx.guide : ctx.base;
  MixtureArgmax* slots = args.mixtures + lane * team.size;
  if (d.mode == kCoopGreedyScan) {
    const MixtureArgmax best = greedy_scan(ctx, args, team, d, sb_max, sh.reduce);
    if (threadIdx.x == 0) slots[team.member] = best;
  } else if (d.mode == kCoopWalk && d.owner == team.member) {
    const PartRange part = member_part(args, team.member, d.use_guide);
    const int64_t sub = 32 * VecTraits<T>::kSize;
    const int64_t end = part.last * sub < component.length ? part.last * sub : component.length;
    const float max = d.use_guide ? d.guide.max : d.base.max;
    const int32_t token = walk_storage_order(component, part.first * sub, end, d.remainder,
                                             PlainWeight<T>{max, inv_t}, sh.reduce);
    if (threadIdx.x == 0) p.out.tokens[row] = token;
  } else if (d.mode == kCoopSelect) {
    team_select(component, p, args, team, lane, row, inv_t, sb_max, sh, published);
  }
  if (team_finish(team, sh.flag)) {
    if (d.mode == kCoopGreedyScan) finish_greedy_scan(slots, team.size, d, p.out, row);
    if (d.mode == kCoopSelect) {
      const int32_t token = finish_select(component, p, args, team, lane, row, inv_t, sh);
      if (threadIdx.x == 0) p.out.tokens[row] = token;
    }
  }
  __syncthreads();  // shared memory is reused by the next row
}

// 256 threads, at most 64 registers: four blocks per SM, which is what the
// streaming pass needs to keep enough loads in flight.
template <typename T>
__global__ void __launch_bounds__(kThreads, 4)
    blend_step_coop_kernel(const T* __restrict__ base, const T* __restrict__ guide,
                           const __grid_constant__ StepParams p,
                           const __grid_constant__ CoopArgs args) {
  BLENDIN_BLOCK_SHARED(CoopShared, sh);
  const int64_t lane = blockIdx.x / args.team;
  const Team team{reinterpret_cast<CoopSync*>(args.sync + lane * kCoopSyncWords), args.team,
                  static_cast<int32_t>(blockIdx.x % args.team)};
  for (int64_t row = lane; row < p.batch; row += args.lanes) {
    coop_row(base, guide, p, args, lane, row, team, sh);
  }
}

}  // namespace blendin::cuda
