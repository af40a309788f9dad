// The arithmetic of one BlendIn step that every kernel shares: exp, online
// softmax partials and their merge, top-K candidate lists, the intervention
// decision and the mixture weight. Written once for host and device so that
// the CPU tests exercise the same formulas the GPU runs.
//
// Semantics: blendin_ext/ops/README.md.
#pragma once

#include <cstdint>
#include <cstring>

#include "blendin/macros.h"

#if !defined(__CUDACC__)
#include <cmath>
#endif

// +inf as a constant expression that host and device code both accept
// (nvcc rejects a device intrinsic inside __host__ __device__ functions).
#define BLENDIN_INF __builtin_huge_valf()

namespace blendin {

// Candidates kept per model for the exact greedy shortcut (see MixtureArgmax).
constexpr int kTopK = 8;

// ---------------------------------------------------------------- exp ----
// exp(x) for x <= 0 (every caller subtracts the running max first), written
// with plain float ops so the CPU compiler vectorises it and the GPU computes
// the identical value. Relative error below 1e-7 (a degree-6 minimax
// polynomial after Cody-Waite reduction).
BLENDIN_HD float bits_to_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#elif defined(__GNUC__) || defined(__clang__)
  return __builtin_bit_cast(float, bits);  // a memcpy here blocks vectorisation
#else
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
#endif
}

BLENDIN_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#elif defined(__GNUC__) || defined(__clang__)
  return __builtin_bit_cast(uint32_t, f);
#else
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
#endif
}

namespace exp_detail {
constexpr float kMinArg = -87.0f;  // 2^-125.5: results stay normal floats

// exp(x) for kMinArg <= x <= 0; garbage (or NaN) below kMinArg, where the
// callers below select 0. Branch-free and without floorf or a float->int
// conversion (each costs the vectoriser ops); every multiply-add is an
// explicit fma so host and device round identically. Eight multiply-adds:
// on CPUs with two FMA pipes they set the pace of every softmax pass.
BLENDIN_HD float exp_in_range(float x) {
  const float kLog2e = 1.44269504088896341f;
  // One-constant reduction: float(ln 2) is off by 1.9e-9, so r is off by at
  // most |n| * 1.9e-9 (2.4e-7 at the bottom of the range, where exp is below
  // 2^-100; under 1e-8 for the entries that carry a softmax's mass).
  const float kLn2 = 0.693147180559945309f;
  const float kRoundMagic = 12582912.0f;         // 1.5 * 2^23: k's low bits hold n
  const float k = fmaf(x, kLog2e, kRoundMagic);  // 1.5 * 2^23 + round(x / ln 2)
  const float n = k - kRoundMagic;
  const float r = fmaf(-n, kLn2, x);  // |r| <= ln(2) / 2 (+ the rounding above)
  // Degree-5 minimax of exp on [-ln(2)/2, ln(2)/2], 1 + r fixed: relative
  // error 1.1e-7, 1.6e-7 with float rounding.
  float p = 8.3128013649e-3f;
  p = fmaf(p, r, 4.1890205010e-2f);
  p = fmaf(p, r, 1.6667111523e-1f);
  p = fmaf(p, r, 4.9999230832e-1f);
  p = fmaf(p, r, 1.0f);
  p = fmaf(p, r, 1.0f);
  // (bits(k) + 127) << 23 == (n + 127) << 23, i.e. 2^n: the magic's bits shift out.
  return p * bits_to_float((float_to_bits(k) + 127u) << 23);
}
}  // namespace exp_detail

// The exp of every kernel: 0 for x < -87 (exp there is below 2^-125),
// for -inf (a masked logit always has probability 0) and for NaN.
BLENDIN_HD float fast_exp(float x) {
  return x >= exp_detail::kMinArg ? exp_detail::exp_in_range(x) : 0.0f;
}

// fast_exp, except that NaN stays NaN: a sum of these is NaN exactly when
// an entry was, which spares a statistics pass a separate NaN check.
BLENDIN_HD float fast_exp_keep_nan(float x) {
  return x < exp_detail::kMinArg ? 0.0f : exp_detail::exp_in_range(x);
}

// A logit counts toward a distribution unless it is -inf (masked). NaN and
// +inf make the whole row bad.
BLENDIN_HD bool is_bad_logit(float x) { return !(x < BLENDIN_INF); }

// --------------------------------------------------- softmax partials ----
// (max, sum of exp(x - max), first argmax) over any slice of a row. Partials
// of disjoint slices merge associatively, so CPU vocab chunks and CUDA blocks
// reduce the same way. `sum_tempered` is sum exp((x - max) / T) for the
// sampling temperature of the row (equal to `sum` when T == 1 or unused).
struct SoftmaxPartial {
  float max;
  float sum;
  float sum_tempered;
  int32_t argmax;  // id of the first maximum (base id for a mapped guide)
  int32_t bad;     // a NaN or +inf logit was seen
};

BLENDIN_HD SoftmaxPartial empty_partial() {
  return SoftmaxPartial{-BLENDIN_INF, 0.0f, 0.0f, INT32_MAX, 0};
}

// True when (value_a, id_a) ranks before (value_b, id_b): larger value first,
// ties to the smaller id. The one order used for argmax, top-K and top-k/p.
BLENDIN_HD bool ranks_before(float value_a, int32_t id_a, float value_b, int32_t id_b) {
  return value_a > value_b || (value_a == value_b && id_a < id_b);
}

BLENDIN_HD void merge_partial(SoftmaxPartial& into, const SoftmaxPartial& other,
                              float inv_temperature) {
  into.bad |= other.bad;
  if (other.max == -BLENDIN_INF) return;  // nothing valid on the other side
  if (into.max == -BLENDIN_INF) {
    const int32_t bad = into.bad;
    into = other;
    into.bad = bad;
    return;
  }
  const float m = into.max > other.max ? into.max : other.max;
  into.sum = into.sum * fast_exp(into.max - m) + other.sum * fast_exp(other.max - m);
  into.sum_tempered = into.sum_tempered * fast_exp((into.max - m) * inv_temperature) +
                      other.sum_tempered * fast_exp((other.max - m) * inv_temperature);
  if (ranks_before(other.max, other.argmax, into.max, into.argmax)) {
    into.argmax = other.argmax;
  }
  into.max = m;
}

// ------------------------------------------------------ top-K lists ----
// The kTopK best (logit, id) pairs of a slice, best first. `id` is a base id
// (for the guide: the base twin of the guide token).
struct TopK {
  float value[kTopK];
  int32_t id[kTopK];
  int32_t count;
};

BLENDIN_HD void topk_clear(TopK& list) { list.count = 0; }

// Smallest value a pair must beat to enter a full list.
BLENDIN_HD float topk_floor(const TopK& list) {
  return list.count < kTopK ? -BLENDIN_INF : list.value[kTopK - 1];
}

BLENDIN_HD void topk_insert(TopK& list, float value, int32_t id) {
  int pos = list.count < kTopK ? list.count : kTopK;
  if (pos == kTopK && !ranks_before(value, id, list.value[kTopK - 1], list.id[kTopK - 1])) {
    return;
  }
  if (pos == kTopK) pos = kTopK - 1;
  while (pos > 0 && ranks_before(value, id, list.value[pos - 1], list.id[pos - 1])) {
    list.value[pos] = list.value[pos - 1];
    list.id[pos] = list.id[pos - 1];
    --pos;
  }
  list.value[pos] = value;
  list.id[pos] = id;
  if (list.count < kTopK) ++list.count;
}

BLENDIN_HD void topk_merge(TopK& into, const TopK& other) {
  for (int i = 0; i < other.count; ++i) topk_insert(into, other.value[i], other.id[i]);
}

// --------------------------------------------------- decision rule ----
// Probability of a logit under a finished partial (1 / sum is precomputed).
BLENDIN_HD float prob_of(float logit, float max, float inv_sum) {
  return fast_exp(logit - max) * inv_sum;
}

struct Decision {
  bool intervened;
  float alpha;  // weight of the guide in the step's mixture; 0 if not intervened
};

// intervened = c_b < gamma; alpha is the fixed value, or (when alpha_fixed < 0)
// the paper's reliability rule clamp(c_g / (c_b + c_g) + bonus * agree, 0, 1).
BLENDIN_HD Decision decide(float base_top_prob, float guide_top_prob, float agree, float gamma,
                           float alpha_fixed, float agree_bonus) {
  Decision d;
  d.intervened = base_top_prob < gamma;
  float a = alpha_fixed;
  if (alpha_fixed < 0.0f) {
    // explicit fma: nvcc would contract a * b + c on its own, the host would not
    a = fmaf(agree_bonus, agree, guide_top_prob / (base_top_prob + guide_top_prob));
    a = a < 0.0f ? 0.0f : (a > 1.0f ? 1.0f : a);
  }
  d.alpha = d.intervened ? a : 0.0f;
  return d;
}

// 1 / T for a sampled row (T > 0), saturated at 2^100: below T = 2^-100
// (subnormal T included, whose reciprocal would overflow float32 and turn
// (x - max) / T into 0 * inf = NaN at the max) the row is tempered as at
// 2^-100, i.e. the limit T -> 0: each component keeps only its top logit and
// logits within ~1e-30 of it. Greedy rows (T == 0) use 1. Every kernel takes
// its 1 / T from here, so they all apply the same rule.
constexpr float kMaxInverseTemperature = 1.2676506002282294e30f;  // 2^100
BLENDIN_HD float inverse_temperature(float temperature) {
  if (!(temperature > 0.0f)) return 1.0f;
  const float inv = 1.0f / temperature;
  return inv < kMaxInverseTemperature ? inv : kMaxInverseTemperature;
}

// Per-row parameters that arrive as device tensors cannot be checked on the
// host without a sync; a row whose values are out of range (or NaN) is
// treated as a bad row instead. Host-side callers reject them up front.
BLENDIN_HD bool row_params_valid(float gamma, float alpha, float temperature, int32_t top_k,
                                 float top_p) {
  return gamma >= 0.0f && alpha <= 1.0f && alpha == alpha && temperature >= 0.0f && top_k >= 0 &&
         top_p > 0.0f && top_p <= 1.0f;
}

// q = alpha * p_guide + (1 - alpha) * p_base, with an explicit fma so every
// kernel rounds it the same way.
BLENDIN_HD float mixture_prob(float alpha, float p_guide, float p_base) {
  return fmaf(alpha, p_guide, (1.0f - alpha) * p_base);
}

// Running argmax of the mixture, ties to the smallest id.
struct MixtureArgmax {
  float best;
  int32_t token;
};

BLENDIN_HD MixtureArgmax mixture_argmax_init() { return MixtureArgmax{-1.0f, INT32_MAX}; }

BLENDIN_HD void mixture_consider(MixtureArgmax& m, float q, int32_t token) {
  if (ranks_before(q, token, m.best, m.token)) {
    m.best = q;
    m.token = token;
  }
}

BLENDIN_HD void mixture_merge(MixtureArgmax& into, const MixtureArgmax& other) {
  mixture_consider(into, other.best, other.token);
}

// The candidates (both top-K lists) decide the greedy token exactly when the
// best candidate beats every token outside the lists: such a token has
// p_base <= base_floor_prob and p_guide <= guide_floor_prob (the K-th entries;
// 0 when a list is not full, since then it holds every token with mass), so
// its q is at most mixture_prob(alpha, guide_floor, base_floor). Rounding is
// monotone, so the comparison is exact for the computed values too.
BLENDIN_HD bool candidates_are_exact(const MixtureArgmax& best, float alpha, float guide_floor_prob,
                                     float base_floor_prob) {
  return best.best > mixture_prob(alpha, guide_floor_prob, base_floor_prob);
}

// ------------------------------------------------- per-row parameters ----
// A scalar or per-row parameter: `data` null means every row uses `value`;
// otherwise row r reads data[r * stride] (stride 0 broadcasts one element).
template <typename T>
struct RowParam {
  const T* data;
  T value;
  int64_t stride;

  BLENDIN_HD T at(int64_t row) const { return data ? data[row * stride] : value; }
};

}  // namespace blendin
