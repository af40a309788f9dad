// What the last block of a row does once every slice has reported: merge
// the slice partials, decide (shared decide()), and pick the greedy token,
// exactly: from the top-K candidates when candidates_are_exact() proves
// it, else by a full pass of the finishing block over the base vocabulary.
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
  RowView<T> guide;                 // guide.mapped: ids go through the vocabulary map
  const SlicePartial* partials;     // the row's base slices, then its guide slices
  int32_t base_slices;
  int32_t guide_slices;
  int64_t slice_elems;
  float inv_temperature;            // 1 / T, or 1 for greedy rows
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
};

__device__ __forceinline__ SoftmaxPartial load_partial_cg(const SlicePartial* s) {
  SoftmaxPartial p;
  p.max = load_cg(&s->softmax.max);
  p.sum = load_cg(&s->softmax.sum);
  p.sum_tempered = load_cg(&s->softmax.sum_tempered);
  p.argmax = load_cg(&s->softmax.argmax);
  p.bad = load_cg(&s->softmax.bad);
  return p;
}

// Warp 0 merges the base slices, warp 1 the guide slices.
template <typename T>
__device__ void merge_row_partials(const RowContext<T>& ctx, RowShared& rs) {
  const int w = warp_id();
  if (w < 2) {
    const int32_t first = w == 0 ? 0 : ctx.base_slices;
    const int32_t n = w == 0 ? ctx.base_slices : ctx.guide_slices;
    const SlicePartial* parts = ctx.partials + first;
    SoftmaxPartial p = empty_partial();
    for (int s = lane_id(); s < n; s += 32) merge_partial(p, load_partial_cg(parts + s), ctx.inv_temperature);
    p = warp_merge_partials(p, ctx.inv_temperature);
    auto load = [&](int i, float& value, int32_t& id) {
      value = load_cg(&parts[i / kTopK].top_value[i % kTopK]);
      id = load_cg(&parts[i / kTopK].top_id[i % kTopK]);
    };
    float value;
    int32_t id;
    warp_topk_of_entries(n * kTopK, load, value, id);
    if (lane_id() == 0) (w == 0 ? rs.base : rs.guide) = p;
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

// Thread 0 applies the decision rule and writes every output but the token
// (and the token too where no search is needed); the mode tells the block
// what remains.
template <typename T>
__device__ void decide_row(const RowContext<T>& ctx, const StepParams& p, RowShared& rs) {
  if (threadIdx.x == 0) {
    const int64_t row = ctx.row;
    const float temperature = p.temperature.at(row);
    const bool params_ok = row_params_valid(p.gamma.at(row), p.alpha.at(row), temperature,
                                            p.top_k.at(row), p.top_p.at(row));
    const SoftmaxPartial& b = rs.base;
    const SoftmaxPartial& g = rs.guide;
    if (!params_ok || b.bad || g.bad || b.max == -BLENDIN_INF || g.max == -BLENDIN_INF) {
      write_bad_row(p.out, row);
      rs.mode = kRowFinished;
    } else {
      const float base_top_prob = 1.0f / b.sum;  // prob_of(max) == 1 / sum
      const float guide_top_prob = 1.0f / g.sum;
      const float agree = prob_of(ctx.base.at(g.argmax), b.max, 1.0f / b.sum);
      const Decision d = decide(base_top_prob, guide_top_prob, agree, p.gamma.at(row),
                                p.alpha.at(row), p.agree_bonus);
      p.out.intervened[row] = d.intervened;
      p.out.alpha[row] = d.alpha;
      p.out.base_top_prob[row] = base_top_prob;
      p.out.guide_top_prob[row] = guide_top_prob;
      p.out.agree[row] = agree;
      rs.alpha = d.alpha;
      if (temperature > 0.0f) {
        rs.mode = kRowSample;
      } else if (d.alpha == 0.0f || d.alpha == 1.0f) {
        p.out.tokens[row] = d.alpha == 0.0f ? b.argmax : g.argmax;
        rs.mode = kRowFinished;
      } else {
        rs.mode = kRowGreedy;
      }
    }
  }
  __syncthreads();
}

// p~_g of a base token: its guide twin's probability, 0 without a twin.
template <typename T>
__device__ __forceinline__ float guide_prob_of(const RowView<T>& guide, int64_t base_id,
                                               float inv_guide_sum, float guide_max) {
  const int64_t g = guide.mapped ? guide.map.guide_of(base_id) : base_id;
  if (g < 0 || g >= guide.length) return 0.0f;
  return prob_of(guide.at(g), guide_max, inv_guide_sum);
}

// Exact greedy token of the mixture: warp 0 scores the 2K candidates; when
// their best provably beats every other token it is the answer, otherwise
// the whole block scores every base token.
template <typename T>
__device__ void greedy_row(const RowContext<T>& ctx, const StepParams& p, RowShared& rs,
                           ReduceScratch& reduce) {
  const float alpha = rs.alpha;
  const float inv_base_sum = 1.0f / rs.base.sum;
  const float inv_guide_sum = 1.0f / rs.guide.sum;
  const float base_max = rs.base.max;
  const float guide_max = rs.guide.max;
  if (warp_id() == 0) {
    const int lane = lane_id();
    const bool from_base = lane < kTopK;
    const int k = lane % kTopK;
    const float value = from_base ? rs.base_top_value[k] : rs.guide_top_value[k];
    const int32_t id = from_base ? rs.base_top_id[k] : rs.guide_top_id[k];
    MixtureArgmax m = mixture_argmax_init();
    if (lane < 2 * kTopK && value != -BLENDIN_INF) {
      const float q = mixture_prob(alpha, guide_prob_of(ctx.guide, id, inv_guide_sum, guide_max),
                                   prob_of(ctx.base.at(id), base_max, inv_base_sum));
      m = MixtureArgmax{q, id};
    }
#pragma unroll
    for (int mask = 16; mask > 0; mask >>= 1) mixture_shfl_merge(m, mask);
    if (lane == 0) {
      const float base_last = rs.base_top_value[kTopK - 1];
      const float guide_last = rs.guide_top_value[kTopK - 1];
      const float base_floor = base_last != -BLENDIN_INF ? prob_of(base_last, base_max, inv_base_sum) : 0.0f;
      const float guide_floor = guide_last != -BLENDIN_INF ? prob_of(guide_last, guide_max, inv_guide_sum) : 0.0f;
      const bool exact = candidates_are_exact(m, alpha, guide_floor, base_floor);
      if (exact) p.out.tokens[ctx.row] = m.token;
      BLENDIN_TRACE(exact ? "greedy_candidates" : "greedy_full_pass");
      rs.candidates_exact = exact;
    }
  }
  __syncthreads();
  if (rs.candidates_exact) return;

  MixtureArgmax mine = mixture_argmax_init();
  auto score = [&](float x, int64_t id) {
    const float pg = guide_prob_of(ctx.guide, id, inv_guide_sum, guide_max);
    mixture_consider(mine, mixture_prob(alpha, pg, prob_of(x, base_max, inv_base_sum)),
                     static_cast<int32_t>(id));
  };
  for_each_entry(ctx.base.logits, 0, ctx.base.length, score);
  const MixtureArgmax best = block_mixture_argmax(mine, reduce);
  if (threadIdx.x == 0) p.out.tokens[ctx.row] = best.token;
}

}  // namespace blendin::cuda
