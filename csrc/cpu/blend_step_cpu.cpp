// CPU BlendIn step. Three phases, each a parallel loop:
//   1. statistics: every (row, vocab chunk) of both models, read once;
//   2. per row: merge the chunks, find the argmax and top-K candidates from
//      the sub-block maxima, decide, pick the token (greedy from the
//      candidates, or one sampling draw);
//   3. only for greedy rows whose candidates could not prove the argmax of
//      the mixture: an exact pass over the base vocabulary, by chunks.
// Compiled once per CPU variant (cpu_variant.h); blend_step_dispatch.cpp
// defines blendin::cpu::blend_step on top of the variants.
#include "blend_step_cpu.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

#include "blendin/blend_math.h"
#include "blendin/philox.h"
#include "chunk_stats.h"
#include "cpu_variant.h"
#include "float_load.h"
#include "sampling.h"

namespace blendin::cpu {
inline namespace BLENDIN_CPU_VARIANT {
namespace {

// Pieces of work smaller than this many logits stay on one thread.
constexpr int64_t kGrainElements = 32768;
constexpr int64_t kChunkGrain = kGrainElements / kChunk;

// A row's merged statistics, kept for the exact greedy pass.
struct RowSummary {
  SoftmaxPartial base;
  SoftmaxPartial guide;
  float alpha;
};

template <typename T>
class StepRunner {
 public:
  StepRunner(const T* base, const T* guide, const StepParams& p, const ParallelFor& pf)
      : base_(base),
        guide_(guide),
        p_(p),
        parallel_for_(pf),
        base_chunks_((p.vocab + kChunk - 1) / kChunk),
        chunks_per_row_(base_chunks_ + (p.guide_vocab + kChunk - 1) / kChunk),
        stats_(new ChunkStats[p.batch * chunks_per_row_]),
        summaries_(new RowSummary[p.batch]) {}

  void run() {
    parallel_for_(p_.batch * chunks_per_row_, kChunkGrain, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) chunk_task(task);
    });
    Vector<uint8_t> needs_full_pass(p_.batch, 0);
    parallel_for_(p_.batch, row_grain(), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) needs_full_pass[row] = finish_row(row);
    });
    Vector<int64_t> full_pass_rows;
    for (int64_t row = 0; row < p_.batch; ++row) {
      if (needs_full_pass[row]) full_pass_rows.push_back(row);
    }
    if (!full_pass_rows.empty()) exact_greedy(full_pass_rows);
  }

 private:
  // Rows per thread in the finishing phase. A greedy row finishes from its
  // candidates in a few microseconds (two models' sub-block maxima, a few
  // sub-blocks read again): four of them are worth a thread. A sampled row
  // also walks the blocks of its vocabulary that reach its top-k / top-p
  // cut, so every sampled row may go to a thread of its own.
  int64_t row_grain() const {
    for (int64_t row = 0; row < p_.batch; ++row) {
      if (p_.temperature.at(row) > 0.0f) return 1;
    }
    return 4;
  }

  const T* base_row(int64_t row) const { return base_ + row * p_.base_row_stride; }
  const T* guide_row(int64_t row) const { return guide_ + row * p_.guide_row_stride; }
  ChunkStats* row_stats(int64_t row) const { return stats_.get() + row * chunks_per_row_; }

  float inv_temperature(int64_t row) const { return inverse_temperature(p_.temperature.at(row)); }

  void chunk_task(int64_t task) {
    const int64_t row = task / chunks_per_row_;
    const int64_t chunk = task % chunks_per_row_;
    const float t = p_.temperature.at(row);
    const bool tempered = t > 0.0f && t != 1.0f;
    ChunkStats* out = row_stats(row) + chunk;
    const Prefetch ahead =
        task + 1 < p_.batch * chunks_per_row_ ? task_logits(task + 1) : Prefetch{};
    if (chunk < base_chunks_) {
      *out = plain_chunk(base_row(row), p_.vocab, chunk, tempered, inv_temperature(row), ahead);
    } else if (!p_.map.present()) {
      *out = plain_chunk(guide_row(row), p_.guide_vocab, chunk - base_chunks_, tempered,
                         inv_temperature(row), ahead);
    } else {
      *out = mapped_guide_chunk(row, chunk - base_chunks_, tempered, inv_temperature(row), ahead);
    }
  }

  // The raw logits a statistics task reads (a task is usually followed by
  // the next one on the same thread: parallel_for hands out ranges).
  Prefetch task_logits(int64_t task) const {
    const int64_t row = task / chunks_per_row_;
    const int64_t chunk = task % chunks_per_row_;
    const bool base = chunk < base_chunks_;
    const int64_t begin = (base ? chunk : chunk - base_chunks_) * kChunk;
    const int64_t n = std::min(kChunk, (base ? p_.vocab : p_.guide_vocab) - begin);
    const T* logits = (base ? base_row(row) : guide_row(row)) + begin;
    return {reinterpret_cast<const char*>(logits), n * static_cast<int64_t>(sizeof(T))};
  }

  ChunkStats plain_chunk(const T* row, int64_t length, int64_t chunk, bool tempered, float inv_t,
                         Prefetch ahead) const {
    const int64_t begin = chunk * kChunk;
    const int64_t n = std::min(kChunk, length - begin);
    float staging[kChunk];
    const float* x = as_floats(row + begin, n, staging);
    return chunk_stats(x, n, /*bad=*/false, tempered, inv_t, ahead);
  }

  // Guide chunk under a vocabulary map: unmapped tokens are masked, ids are
  // base ids. An out-of-range map entry marks the row bad instead of
  // reading out of bounds (the Python layer validates maps up front).
  ChunkStats mapped_guide_chunk(int64_t row, int64_t chunk, bool tempered, float inv_t,
                                Prefetch ahead) const {
    const int64_t begin = chunk * kChunk;
    const int64_t n = std::min(kChunk, p_.guide_vocab - begin);
    float staging[kChunk];
    float masked[kChunk];
    const float* raw = as_floats(guide_row(row) + begin, n, staging);
    bool bad = any_bad_logit(raw, n);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t id = p_.map.base_of(begin + i);
      bad |= id < -1 || id >= p_.vocab;
      masked[i] = (id >= 0 && id < p_.vocab) ? raw[i] : -BLENDIN_INF;
    }
    return chunk_stats(masked, n, bad, tempered, inv_t, ahead);
  }

  // Entries [begin, begin + n) of a row as floats before any mapping, and
  // entry j with its base id: what row_candidates reads.
  auto raw_entries(const T* row) const {
    return [row](int64_t begin, int64_t n, float* staging) {
      return as_floats(row + begin, n, staging);
    };
  }
  auto base_entry(int64_t row) const {
    return [this, row](int64_t j, int32_t* id) {
      *id = static_cast<int32_t>(j);
      return to_float(base_row(row)[j]);
    };
  }
  auto guide_entry(int64_t row) const {
    return [this, row](int64_t j, int32_t* id) {
      const int64_t base_id = p_.map.base_of(j);  // j itself without a map
      *id = static_cast<int32_t>(base_id);
      return (base_id >= 0 && base_id < p_.vocab) ? to_float(guide_row(row)[j]) : -BLENDIN_INF;
    };
  }

  float base_prob(int64_t row, int64_t id, const SoftmaxPartial& s) const {
    return prob_of(to_float(base_row(row)[id]), s.max, 1.0f / s.sum);
  }

  // p~_g of a base token: its guide twin's probability, 0 without a twin.
  float guide_prob(int64_t row, int64_t base_id, const SoftmaxPartial& s) const {
    const int64_t g = p_.map.guide_of(base_id);
    if (g < 0 || g >= p_.guide_vocab) return 0.0f;
    return prob_of(to_float(guide_row(row)[g]), s.max, 1.0f / s.sum);
  }

  void write_bad_row(int64_t row) const {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    p_.out.tokens[row] = -1;
    p_.out.intervened[row] = false;
    p_.out.alpha[row] = nan;
    p_.out.base_top_prob[row] = nan;
    p_.out.guide_top_prob[row] = nan;
    p_.out.agree[row] = nan;
  }

  // Returns true when the row's greedy token still needs the exact pass.
  bool finish_row(int64_t row) {
    const ChunkStats* stats = row_stats(row);
    const float inv_t = inv_temperature(row);
    RowSummary& sum = summaries_[row];
    sum.base = empty_partial();
    sum.guide = empty_partial();
    for (int64_t c = 0; c < base_chunks_; ++c) merge_partial(sum.base, stats[c].softmax, inv_t);
    for (int64_t c = base_chunks_; c < chunks_per_row_; ++c) {
      merge_partial(sum.guide, stats[c].softmax, inv_t);
    }
    const bool params_ok =
        row_params_valid(p_.gamma.at(row), p_.alpha.at(row), p_.temperature.at(row),
                         p_.top_k.at(row), p_.top_p.at(row));
    if (!params_ok || sum.base.bad || sum.guide.bad || sum.base.max == -BLENDIN_INF ||
        sum.guide.max == -BLENDIN_INF) {
      write_bad_row(row);
      return false;
    }
    TopK base_top, guide_top;
    row_candidates(stats, p_.vocab, sum.base.max, raw_entries(base_row(row)), base_entry(row),
                   base_top, sum.base.argmax);
    row_candidates(stats + base_chunks_, p_.guide_vocab, sum.guide.max, raw_entries(guide_row(row)),
                   guide_entry(row), guide_top, sum.guide.argmax);
    const float base_top_prob = 1.0f / sum.base.sum;  // prob_of(max) == 1 / sum
    const float guide_top_prob = 1.0f / sum.guide.sum;
    const float agree = base_prob(row, sum.guide.argmax, sum.base);
    const Decision d = decide(base_top_prob, guide_top_prob, agree, p_.gamma.at(row),
                              p_.alpha.at(row), p_.agree_bonus);
    sum.alpha = d.alpha;
    p_.out.intervened[row] = d.intervened;
    p_.out.alpha[row] = d.alpha;
    p_.out.base_top_prob[row] = base_top_prob;
    p_.out.guide_top_prob[row] = guide_top_prob;
    p_.out.agree[row] = agree;

    if (p_.temperature.at(row) > 0.0f) {
      p_.out.tokens[row] = sample(row, d.alpha, sum);
      return false;
    }
    if (d.alpha == 0.0f) {
      p_.out.tokens[row] = sum.base.argmax;
      return false;
    }
    if (d.alpha == 1.0f) {
      p_.out.tokens[row] = sum.guide.argmax;
      return false;
    }
    return !greedy_from_candidates(row, sum, base_top, guide_top);
  }

  bool greedy_from_candidates(int64_t row, const RowSummary& sum, const TopK& base_top,
                              const TopK& guide_top) const {
    MixtureArgmax best = mixture_argmax_init();
    auto consider = [&](int32_t id) {
      const float q =
          mixture_prob(sum.alpha, guide_prob(row, id, sum.guide), base_prob(row, id, sum.base));
      mixture_consider(best, q, id);
    };
    for (int i = 0; i < base_top.count; ++i) consider(base_top.id[i]);
    for (int i = 0; i < guide_top.count; ++i) consider(guide_top.id[i]);
    const float base_floor = base_top.count == kTopK ? prob_of(base_top.value[kTopK - 1],
                                                               sum.base.max, 1.0f / sum.base.sum)
                                                     : 0.0f;
    const float guide_floor =
        guide_top.count == kTopK
            ? prob_of(guide_top.value[kTopK - 1], sum.guide.max, 1.0f / sum.guide.sum)
            : 0.0f;
    if (!candidates_are_exact(best, sum.alpha, guide_floor, base_floor)) return false;
    p_.out.tokens[row] = best.token;
    return true;
  }

  int32_t sample(int64_t row, float alpha, const RowSummary& sum) const {
    const RowUniforms u =
        row_uniforms(static_cast<uint64_t>(p_.seed.at(row)),
                     static_cast<uint64_t>(p_.offset.at(row)), p_.rng_stream(row));
    const bool use_guide = u.component < alpha;
    const float inv_t = inv_temperature(row);
    const ComponentRow<T> component =
        use_guide ? ComponentRow<T>{guide_row(row),
                                    p_.guide_vocab,
                                    p_.map.present() ? &p_.map : nullptr,
                                    p_.vocab,
                                    row_stats(row) + base_chunks_,
                                    sum.guide.max,
                                    inv_t}
                  : ComponentRow<T>{base_row(row),  p_.vocab,     nullptr, p_.vocab,
                                    row_stats(row), sum.base.max, inv_t};
    const int32_t top_k = p_.top_k.at(row);
    const float top_p = p_.top_p.at(row);
    const bool filtered = (top_k > 0 && top_k < component.length) || top_p < 1.0f;
    return filtered ? draw_filtered(component, u.token, top_k, top_p)
                    : draw_unfiltered(component, u.token);
  }

  // The exact argmax of the mixture over every base token, chunk by chunk.
  void exact_greedy(const Vector<int64_t>& rows) {
    const int64_t tasks = static_cast<int64_t>(rows.size()) * base_chunks_;
    std::unique_ptr<MixtureArgmax[]> partial(new MixtureArgmax[tasks]);
    parallel_for_(tasks, kChunkGrain, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        partial[task] = exact_greedy_chunk(rows[task / base_chunks_], task % base_chunks_);
      }
    });
    for (size_t r = 0; r < rows.size(); ++r) {
      MixtureArgmax best = mixture_argmax_init();
      for (int64_t c = 0; c < base_chunks_; ++c) mixture_merge(best, partial[r * base_chunks_ + c]);
      p_.out.tokens[rows[r]] = best.token;
    }
  }

  MixtureArgmax exact_greedy_chunk(int64_t row, int64_t chunk) const {
    const RowSummary& sum = summaries_[row];
    const int64_t begin = chunk * kChunk;
    const int64_t n = std::min(kChunk, p_.vocab - begin);
    float staging[kChunk];
    const float* x = as_floats(base_row(row) + begin, n, staging);
    const float inv_base_sum = 1.0f / sum.base.sum;
    MixtureArgmax best = mixture_argmax_init();
    for (int64_t i = 0; i < n; ++i) {
      const float pb = prob_of(x[i], sum.base.max, inv_base_sum);
      const float q = mixture_prob(sum.alpha, guide_prob(row, begin + i, sum.guide), pb);
      mixture_consider(best, q, static_cast<int32_t>(begin + i));
    }
    return best;
  }

  const T* base_;
  const T* guide_;
  const StepParams& p_;
  const ParallelFor& parallel_for_;
  const int64_t base_chunks_;
  const int64_t chunks_per_row_;
  std::unique_ptr<ChunkStats[]> stats_;
  std::unique_ptr<RowSummary[]> summaries_;
};

}  // namespace

template <typename T>
void blend_step_impl(const T* base_logits, const T* guide_logits, const StepParams& params,
                     const ParallelFor& parallel_for) {
  if (params.batch == 0) return;
  StepRunner<T>(base_logits, guide_logits, params, parallel_for).run();
}

template void blend_step_impl<float>(const float*, const float*, const StepParams&,
                                     const ParallelFor&);
template void blend_step_impl<Float16Bits>(const Float16Bits*, const Float16Bits*,
                                           const StepParams&, const ParallelFor&);
template void blend_step_impl<BFloat16Bits>(const BFloat16Bits*, const BFloat16Bits*,
                                            const StepParams&, const ParallelFor&);

}  // namespace BLENDIN_CPU_VARIANT
}  // namespace blendin::cpu
