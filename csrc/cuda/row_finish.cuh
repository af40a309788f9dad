// What the last block of a row does once every slice has reported: merge
// the slice partials, decide (shared decide()), and pick the greedy token,
// exactly: from the top-K candidates when candidates_are_exact() proves
// it, else by a full pass of the finishing block over the base vocabulary.
//
// Latency matters here (at B = 1 this block is the tail of the step), so
// warp 0 fetches the candidates' logits and the row's parameters in one
// round trip and decides and scores without block-wide barriers.
#pragma once

#include "device_common.cuh"
#include "launch_plan.h"
#include "slice_stats.cuh"

namespace blendin::cuda {

// One row as the finishing block sees it.
template <typename T>
struct RowContext {
  int64_t row;
  RowView<T> base;
  RowView<T> guide;              // guide.mapped: ids go through the vocabulary map
  const SlicePartial* partials;  // the row's base slices, then its guide slices
  int32_t base_slices;
  int32_t guide_slices;
  int64_t slice_elems;
  float inv_temperature;  // 1 / T, or 1 for greedy rows
};

enum RowMode : int { kRowFinished = 0, kRowGreedy = 1, kRowSample = 2 };

// The row's merged statistics and decision, in shared memory.
struct RowShared {
  SoftmaxPartial base;
  SoftmaxPartial guide;
  float base_top_value[kTopK];
  int32_t base_top_id[kTopK];
  float guide_top_value[kTopK];
  int32_t guide_top_id[kTopK];
  int mode;
  float alpha;
  int candidates_exact;
  MixtureArgmax best_candidate;  // greedy rows: the best of the 2K candidates
};

// Warp 0 merges the base slices, warp 1 the guide slices: each lane folds
// its slices (merge_partial) and their candidate lists, the warp's top-K
// gives the maximum, then the lanes' sums are rescaled to it and added.
template <typename T>
__device__ void merge_row_partials(const RowContext<T>& ctx, RowShared& rs) {
  const int w = warp_id();
  if (w < 2) {
    const int32_t first = w == 0 ? 0 : ctx.base_slices;
    const int32_t n = w == 0 ? ctx.base_slices : ctx.guide_slices;
    SoftmaxPartial mine = empty_partial();
    RegTopK top;
    regtopk_clear(top);
    for (int s = lane_id(); s < n; s += 32) {
      const SlicePartial* part = ctx.partials + first + s;
      SoftmaxPartial p;
      p.max = load_cg(&part->softmax.max);
      p.sum = load_cg(&part->softmax.sum);
      p.sum_tempered = load_cg(&part->softmax.sum_tempered);
      p.argmax = load_cg(&part->softmax.argmax);
      p.bad = load_cg(&part->softmax.bad);
      float value[kTopK];
      int32_t id[kTopK];
#pragma unroll
      for (int k = 0; k < kTopK; ++k) {
        value[k] = load_cg(&part->top_value[k]);
        id[k] = load_cg(&part->top_id[k]);
      }
      merge_partial(mine, p, ctx.inv_temperature);
#pragma unroll
      for (int k = 0; k < kTopK; ++k) regtopk_offer(top, value[k], id[k]);
    }
    float value;
    int32_t id;
    warp_topk_merge(top, value, id);
    const float max = __shfl_sync(kFullMask, value, 0);
    const int32_t argmax = __shfl_sync(kFullMask, id, 0);
    const RescaledSums sums = warp_sum(rescale_to(mine, max, ctx.inv_temperature));
    if (lane_id() == 0) {
      (w == 0 ? rs.base : rs.guide) =
          SoftmaxPartial{max, sums.sum, sums.sum_tempered, argmax, sums.bad};
    }
    if (lane_id() < kTopK) {
      (w == 0 ? rs.base_top_value : rs.guide_top_value)[lane_id()] = value;
      (w == 0 ? rs.base_top_id : rs.guide_top_id)[lane_id()] = id;
    }
  }
  __syncthreads();
}

__device__ __forceinline__ void write_bad_row(const StepOutputs& out, int64_t row) {
  const float nan = __int_as_float(0x7fc00000);
  out.tokens[row] = -1;
  out.intervened[row] = false;
  out.alpha[row] = nan;
  out.base_top_prob[row] = nan;
  out.guide_top_prob[row] = nan;
  out.agree[row] = nan;
}

// Guide logit of a base token's guide twin; -inf (probability 0) without one.
template <typename T>
__device__ __forceinline__ float guide_logit_of(const RowView<T>& guide, int64_t base_id) {
  const int64_t g = guide.mapped ? guide.map.guide_of(base_id) : base_id;
  return (g < 0 || g >= guide.length) ? -BLENDIN_INF : guide.at(g);
}

// Warp 0: the decision rule and every output but the token -- and the token
// itself when the 2K candidates (lanes 0..2K-1; lane kTopK holds the guide's
// argmax) provably contain the greedy answer. Lane 0 reads the parameters
// while the other lanes fetch the candidates' logits.
template <typename T>
__device__ void decide_row(const RowContext<T>& ctx, const StepParams& p, RowShared& rs) {
  if (warp_id() == 0) {
    const int64_t row = ctx.row;
    const int lane = lane_id();
    float gamma = 0.0f, alpha_param = 0.0f, temperature = 0.0f, top_p = 1.0f;
    int32_t top_k = 0;
    if (lane == 0) {
      gamma = p.gamma.at(row);
      alpha_param = p.alpha.at(row);
      temperature = p.temperature.at(row);
      top_k = p.top_k.at(row);
      top_p = p.top_p.at(row);
    }
    const bool from_base = lane < kTopK;
    const float cand_value =
        from_base ? rs.base_top_value[lane % kTopK] : rs.guide_top_value[lane % kTopK];
    const int32_t cand_id =
        from_base ? rs.base_top_id[lane % kTopK] : rs.guide_top_id[lane % kTopK];
    const bool candidate = lane < 2 * kTopK && cand_value != -BLENDIN_INF;
    const float base_logit = candidate ? ctx.base.at(cand_id) : -BLENDIN_INF;
    const float guide_logit = candidate ? guide_logit_of(ctx.guide, cand_id) : -BLENDIN_INF;
    const float guide_head_base_logit = __shfl_sync(kFullMask, base_logit, kTopK);

    const SoftmaxPartial& b = rs.base;
    const SoftmaxPartial& g = rs.guide;
    int mode = kRowFinished;
    float alpha = 0.0f;
    if (lane == 0) {
      const bool params_ok = row_params_valid(gamma, alpha_param, temperature, top_k, top_p);
      if (!params_ok || b.bad || g.bad || b.max == -BLENDIN_INF || g.max == -BLENDIN_INF) {
        write_bad_row(p.out, row);
      } else {
        const float base_top_prob = 1.0f / b.sum;  // prob_of(max) == 1 / sum
        const float guide_top_prob = 1.0f / g.sum;
        // lane kTopK's candidate is the guide's argmax (head of its list)
        const float agree = prob_of(guide_head_base_logit, b.max, 1.0f / b.sum);
        const Decision d =
            decide(base_top_prob, guide_top_prob, agree, gamma, alpha_param, p.agree_bonus);
        p.out.intervened[row] = d.intervened;
        p.out.alpha[row] = d.alpha;
        p.out.base_top_prob[row] = base_top_prob;
        p.out.guide_top_prob[row] = guide_top_prob;
        p.out.agree[row] = agree;
        alpha = d.alpha;
        if (temperature > 0.0f) {
          mode = kRowSample;
        } else if (d.alpha == 0.0f || d.alpha == 1.0f) {
          p.out.tokens[row] = d.alpha == 0.0f ? b.argmax : g.argmax;
        } else {
          mode = kRowGreedy;
        }
      }
    }
    mode = __shfl_sync(kFullMask, mode, 0);
    alpha = __shfl_sync(kFullMask, alpha, 0);
    int exact = 0;
    if (mode == kRowGreedy) {  // warp-uniform
      const float inv_base_sum = 1.0f / b.sum;
      const float inv_guide_sum = 1.0f / g.sum;
      MixtureArgmax m = mixture_argmax_init();
      if (candidate) {
        m = MixtureArgmax{mixture_prob(alpha, prob_of(guide_logit, g.max, inv_guide_sum),
                                       prob_of(base_logit, b.max, inv_base_sum)),
                          cand_id};
      }
#pragma unroll
      for (int mask = 16; mask > 0; mask >>= 1) mixture_shfl_merge(m, mask);
      if (lane == 0) {
        const float base_last = rs.base_top_value[kTopK - 1];
        const float guide_last = rs.guide_top_value[kTopK - 1];
        const float base_floor =
            base_last != -BLENDIN_INF ? prob_of(base_last, b.max, inv_base_sum) : 0.0f;
        const float guide_floor =
            guide_last != -BLENDIN_INF ? prob_of(guide_last, g.max, inv_guide_sum) : 0.0f;
        exact = candidates_are_exact(m, alpha, guide_floor, base_floor);
        if (exact) p.out.tokens[row] = m.token;
        rs.best_candidate = m;
        BLENDIN_TRACE(exact ? "greedy_candidates" : "greedy_full_pass");
      }
    }
    if (lane == 0) {
      rs.mode = mode;
      rs.alpha = alpha;
      rs.candidates_exact = exact;
    }
  }
  __syncthreads();
}

// Greedy rows the candidates could not settle: the whole block scores every
// base token of the mixture.
template <typename T>
__device__ void greedy_full_pass(const RowContext<T>& ctx, const StepParams& p, const RowShared& rs,
                                 ReduceScratch& reduce) {
  const float alpha = rs.alpha;
  const float inv_base_sum = 1.0f / rs.base.sum;
  const float inv_guide_sum = 1.0f / rs.guide.sum;
  const float base_max = rs.base.max;
  const float guide_max = rs.guide.max;
  MixtureArgmax mine = mixture_argmax_init();
  auto score = [&](float x, int64_t id) {
    const float pg = prob_of(guide_logit_of(ctx.guide, id), guide_max, inv_guide_sum);
    mixture_consider(mine, mixture_prob(alpha, pg, prob_of(x, base_max, inv_base_sum)),
                     static_cast<int32_t>(id));
  };
  for_each_entry(ctx.base.logits, 0, ctx.base.length, score);
  const MixtureArgmax best = block_mixture_argmax(mine, reduce);
  if (threadIdx.x == 0) p.out.tokens[ctx.row] = best.token;
}

}  // namespace blendin::cuda
