// Sampling in the cooperative kernel: what the leader decides for a sampled
// row, and what the team then does (coop_kernel.cuh runs the phases).
//
//  - no top-k / top-p: the members' part masses locate the part that holds
//    u * (component mass), as the CPU locates its chunk; that member walks
//    its part in storage order (kCoopWalk);
//  - a cut the top-K list settles (top-k <= K, or a nucleus inside the
//    list): the leader walks the list itself, in storage order;
//  - any other cut: the team's exact select (coop_select.cuh, kCoopSelect).
#pragma once

#include "blendin/philox.h"
#include "coop_plan.h"
#include "coop_select.cuh"
#include "coop_sync.cuh"
#include "device_common.cuh"
#include "row_finish.cuh"
#include "row_sample.cuh"
#include "select_cut.cuh"

namespace blendin::cuda {

enum CoopMode : int32_t { kCoopDone = 0, kCoopGreedyScan = 1, kCoopWalk = 2, kCoopSelect = 3 };

struct CoopArgs {
  int32_t team;
  int64_t lanes;
  int64_t base_subblocks;
  int64_t guide_subblocks;
  int64_t member_subblocks;
  unsigned int* sync;          // lanes x kCoopSyncWords, zero between launches
  SlicePartial* partials;      // lanes x (team base parts, then team guide parts)
  CoopDecision* decisions;     // lanes
  MixtureArgmax* mixtures;     // lanes x team
  float* subblock_max;         // lanes x (base, then guide sub-blocks)
  unsigned long long* kept;    // lanes x max(base, guide sub-blocks): select's kept mass
  unsigned long long* gather;  // lanes x kCoopGatherCap keys

  __device__ __forceinline__ int64_t subblocks(bool guide) const {
    return guide ? guide_subblocks : base_subblocks;
  }
};

struct CoopShared {
  union {
    SliceScratch slice;
    SelectShared select;
    SliceMassShared slice_mass;
    SelectFinishShared finish;
  } u;
  RowShared row;
  SampleShared sample;
  ReduceScratch reduce;
  CoopDecision decision;
  int flag;
};

// The kept entries of a cut taken from the top-K list (all of them in the
// list), walked in storage order: the row walk of KeptWeight, which gives
// every other entry weight 0, without reading the row. Thread 0 only.
template <typename T>
__device__ int32_t walk_list(const RowView<T>& view, const ComponentTop& top,
                             const SelectResult& cut, float max, float inv_t, float u) {
  int64_t where[kTopK];
  int32_t id[kTopK];
  unsigned long long weight[kTopK];
  int n = 0;
  for (int i = 0; i < kTopK && top.value[i] != -BLENDIN_INF; ++i) {
    if (rank_key(top.value[i], top.id[i]) < cut.cut) continue;
    // insertion by storage index
    const int64_t j = view.mapped ? view.map.guide_of(top.id[i]) : top.id[i];
    int at = n++;
    while (at > 0 && where[at - 1] > j) {
      where[at] = where[at - 1];
      id[at] = id[at - 1];
      weight[at] = weight[at - 1];
      --at;
    }
    where[at] = j;
    id[at] = top.id[i];
    weight[at] = fixed_weight((top.value[i] - max) * inv_t);
  }
  const unsigned long long target = scale_by_uniform(u, cut.mass);
  unsigned long long cumulative = 0ull;
  int32_t last = -1;
  for (int i = 0; i < n; ++i) {
    if (weight[i] == 0ull) continue;
    cumulative += weight[i];
    last = id[i];
    if (cumulative > target) return id[i];
  }
  return last;  // rounding left the target beyond the sum, as in the row walk
}

// The leader's decision for a sampled row (every thread of the leader).
template <typename T>
__device__ void lead_sample(const RowContext<T>& ctx, const StepParams& p, const CoopArgs& args,
                            const Team& team, const float* row_sb_max, CoopShared& sh,
                            CoopDecision& d) {
  const RowShared& rs = sh.row;
  if (threadIdx.x == 0) {
    const RowUniforms u =
        row_uniforms(static_cast<uint64_t>(p.seed.at(ctx.row)),
                     static_cast<uint64_t>(p.offset.at(ctx.row)), p.rng_stream(ctx.row));
    sh.sample.u_token = u.token;
    sh.sample.use_guide = u.component < rs.alpha;
  }
  __syncthreads();
  const bool use_guide = sh.sample.use_guide;
  const RowView<T> view = use_guide ? ctx.guide : ctx.base;
  const float max = use_guide ? rs.guide.max : rs.base.max;
  const int32_t top_k = p.top_k.at(ctx.row);
  const float top_p = p.top_p.at(ctx.row);
  d.use_guide = use_guide;
  d.u_token = sh.sample.u_token;
  if (!((top_k > 0 && top_k < view.length) || top_p < 1.0f)) {
    pick_slice(ctx.partials + (use_guide ? team.size : 0), team.size, max, ctx.inv_temperature,
               sh.sample.u_token, sh.u.slice_mass);
    __syncthreads();
    d.mode = kCoopWalk;
    d.owner = sh.u.slice_mass.chosen;
    d.remainder = sh.u.slice_mass.remainder;
    if (threadIdx.x == 0) BLENDIN_TRACE("coop_walk");
    return;
  }
  const ComponentTop top{use_guide ? rs.guide_top_value : rs.base_top_value,
                         use_guide ? rs.guide_top_id : rs.base_top_id,
                         use_guide ? rs.guide.sum_tempered : rs.base.sum_tempered};
  if (threadIdx.x == 0) {
    SelectResult cut;
    sh.flag = cut_from_list(top, max, ctx.inv_temperature, top_k, top_p, view.length, cut);
    if (sh.flag) {
      p.out.tokens[ctx.row] = walk_list(view, top, cut, max, ctx.inv_temperature, d.u_token);
      BLENDIN_TRACE("select_from_list");
    }
  }
  __syncthreads();
  const bool from_list = sh.flag != 0;
  __syncthreads();
  if (from_list) return;  // kCoopDone
  d.mode = kCoopSelect;
  d.bound_bin = select_bound_bin(SelectRow<T>{view, max, ctx.inv_temperature},
                                 row_sb_max + (use_guide ? args.base_subblocks : 0),
                                 args.subblocks(use_guide), top_k, top_p, top.sum_tempered,
                                 sh.u.select, sh.reduce);
  if (threadIdx.x == 0) BLENDIN_TRACE("coop_select");
}

// Copies the decision another block published (past L1, word by word).
__device__ __forceinline__ void read_decision(const CoopDecision* published, CoopShared& sh) {
  const volatile unsigned int* from = reinterpret_cast<const volatile unsigned int*>(published);
  unsigned int* to = reinterpret_cast<unsigned int*>(&sh.decision);
  for (int i = threadIdx.x; i < static_cast<int>(sizeof(CoopDecision) / 4); i += kThreads) {
    to[i] = from[i];
  }
  __syncthreads();
}

__device__ __forceinline__ void publish_decision(const CoopDecision& d, CoopDecision* published,
                                                 CoopShared& sh) {
  if (threadIdx.x == 0) {
    *published = d;
    sh.decision = d;
  }
  __syncthreads();
}

__device__ __forceinline__ int64_t kept_stride(const CoopArgs& args) {
  return args.base_subblocks > args.guide_subblocks ? args.base_subblocks : args.guide_subblocks;
}

// The team's select (kCoopSelect), up to the finish ticket: histogram,
// second barrier (its leader picks the bins to gather), gather.
template <typename T>
__device__ void team_select(const RowView<T>& view, const StepParams& p, const CoopArgs& args,
                            const Team& team, int64_t lane, int64_t row, float inv_t,
                            const float* row_sb_max, CoopShared& sh, CoopDecision* published) {
  const CoopDecision d = sh.decision;
  const bool guide = d.use_guide != 0;
  const SoftmaxPartial stats = guide ? d.guide : d.base;
  const SelectRow<T> select_row{view, stats.max, inv_t};
  const float* sb_max = row_sb_max + (guide ? args.base_subblocks : 0);
  const int64_t subblocks = args.subblocks(guide);
  select_histogram(select_row, sb_max, subblocks, d.bound_bin, team, sh.u.select);
  if (team_arrive(team, 2u, sh.flag)) {
    CoopDecision updated = d;
    select_cut_bins(team.sync, p.top_k.at(row), p.top_p.at(row), stats.sum_tempered, view.length,
                    updated, sh.u.select, sh.reduce);
    publish_decision(updated, published, sh);
    team_release(team, 2u);
  } else {
    team_wait(team, 2u);
    read_decision(published, sh);
  }
  select_gather(select_row, sb_max, subblocks, sh.decision, team,
                args.kept + lane * kept_stride(args), args.gather + lane * kCoopGatherCap);
}

// The last member of a select: the token (the exact cut among the gathered
// keys, or one block's select when they overflowed), then the row's select
// words cleared for the next launch.
template <typename T>
__device__ int32_t finish_select(const RowView<T>& view, const StepParams& p, const CoopArgs& args,
                                 const Team& team, int64_t lane, int64_t row, float inv_t,
                                 CoopShared& sh) {
  const CoopDecision d = sh.decision;
  const bool guide = d.use_guide != 0;
  const SoftmaxPartial stats = guide ? d.guide : d.base;
  const unsigned int gathered = load_cg(&team.sync->gathered);
  const int32_t top_k = p.top_k.at(row);
  const float top_p = p.top_p.at(row);
  int32_t token;
  if (gathered > static_cast<unsigned int>(kCoopGatherCap)) {
    if (threadIdx.x == 0) BLENDIN_TRACE("coop_select_overflow");
    token = draw_by_select(view, stats.max, inv_t, top_k, top_p, d.u_token, sh.u.select, sh.reduce);
  } else {
    token = select_finish(SelectRow<T>{view, stats.max, inv_t}, d, top_k, top_p, stats.sum_tempered,
                          args.subblocks(guide), args.kept + lane * kept_stride(args),
                          args.gather + lane * kCoopGatherCap, gathered, sh.u.finish, sh.reduce);
  }
  clear_select_words(team.sync);
  return token;
}

}  // namespace blendin::cuda
