// Drawing one token from one component (base or mapped guide) of a row at
// temperature T, optionally filtered by top-k then top-p, by inverse CDF in
// storage order. Called at most once per row, after the statistics pass.
#pragma once

#include <algorithm>
#include <cstdint>

#include "blendin/blend_math.h"
#include "chunk_stats.h"
#include "cpu_variant.h"
#include "float_load.h"

namespace blendin::cpu {
inline namespace BLENDIN_CPU_VARIANT {  // see cpu_variant.h

// One model's row as the sampler sees it.
template <typename T>
struct ComponentRow {
  const T* logits;
  int64_t length;            // entries in storage order
  const VocabMap* map;       // non-null for a mapped guide row
  int64_t base_vocab;        // valid base ids are [0, base_vocab)
  const ChunkStats* chunks;  // this row's chunk statistics, one per kChunk
  float max;                 // max over valid entries (merged)
  float inv_temperature;

  // Base id of storage index j, or -1 when j cannot be drawn (unmapped).
  int32_t base_id(int64_t j) const {
    const int64_t id = map ? map->base_of(j) : j;
    return (id >= 0 && id < base_vocab) ? static_cast<int32_t>(id) : -1;
  }
  float weight(float x) const { return fast_exp((x - max) * inv_temperature); }
};

// Draw without filtering: the chunk masses from the statistics pass locate
// the chunk holding the target, so only that chunk is read again. The walk
// accumulates in double so the CDF is as exact as the float32 weights.
// Tempered mass of the whole component, relative to its max, from the
// chunk statistics.
template <typename T>
double component_mass(const ComponentRow<T>& row) {
  const int64_t num_chunks = (row.length + kChunk - 1) / kChunk;
  double total = 0.0;
  for (int64_t c = 0; c < num_chunks; ++c) {
    const SoftmaxPartial& s = row.chunks[c].softmax;
    if (s.max != -BLENDIN_INF) total += double(s.sum_tempered) * row.weight(s.max);
  }
  return total;
}

template <typename T>
int32_t draw_unfiltered(const ComponentRow<T>& row, float u) {
  const int64_t num_chunks = (row.length + kChunk - 1) / kChunk;
  double target = u * component_mass(row);
  int64_t chosen = -1;
  for (int64_t c = 0; c < num_chunks; ++c) {
    const SoftmaxPartial& s = row.chunks[c].softmax;
    if (s.max == -BLENDIN_INF) continue;
    const double mass = double(s.sum_tempered) * row.weight(s.max);
    chosen = c;
    if (target < mass) break;
    target -= mass;
  }
  const int64_t begin = chosen * kChunk;
  const int64_t end = std::min(row.length, begin + kChunk);
  double cumulative = 0.0;
  int32_t last_positive = -1;
  for (int64_t j = begin; j < end; ++j) {
    const int32_t id = row.base_id(j);
    if (id < 0) continue;
    const float w = row.weight(to_float(row.logits[j]));
    if (w <= 0.0f) continue;
    cumulative += w;
    last_positive = id;
    if (cumulative > target) return id;
  }
  return last_positive;  // rounding left the target just past the chunk's sum
}

struct RankedLogit {
  float value;
  int32_t id;  // base id: the tie-break of the ranking
};

inline bool ranked_before(const RankedLogit& a, const RankedLogit& b) {
  return ranks_before(a.value, a.id, b.value, b.id);
}

// The last entry (in rank order) of the top-k, then top-p, set of `items`.
// Top-p keeps the shortest rank-order prefix of the top-k set whose tempered
// mass reaches top_p of that set's mass; `set_mass` gives that mass when the
// items are only the part of the set that can hold the cut (< 0: sum them).
// Expected O(n): nth_element halves the range while the prefix mass decides
// which half holds the cut.
template <typename T>
RankedLogit filter_threshold(const ComponentRow<T>& row, Vector<RankedLogit>& items, int32_t top_k,
                             float top_p, double set_mass) {
  int64_t keep = static_cast<int64_t>(items.size());
  if (top_k > 0 && top_k < keep) {
    std::nth_element(items.begin(), items.begin() + (top_k - 1), items.end(), ranked_before);
    keep = top_k;
    if (!(top_p < 1.0f)) return items[keep - 1];
  } else if (!(top_p < 1.0f)) {
    return *std::max_element(items.begin(), items.end(), ranked_before);  // keeps all
  }

  float mass = 0.0f;
  for (int64_t i = 0; i < keep; ++i) mass += row.weight(items[i].value);
  float need = top_p * (set_mass < 0.0 ? mass : static_cast<float>(set_mass));
  int64_t lo = 0, hi = keep;  // the cut lies in [lo, hi); [0, lo) is kept
  while (hi - lo > 32) {
    const int64_t mid = lo + (hi - lo) / 2;
    std::nth_element(items.begin() + lo, items.begin() + mid, items.begin() + hi, ranked_before);
    float upper = 0.0f;
    for (int64_t i = lo; i <= mid; ++i) upper += row.weight(items[i].value);
    if (upper >= need) {
      hi = mid + 1;
    } else {
      need -= upper;
      lo = mid + 1;
    }
  }
  std::sort(items.begin() + lo, items.begin() + hi, ranked_before);
  float cumulative = 0.0f;
  for (int64_t i = lo; i < hi; ++i) {
    cumulative += row.weight(items[i].value);
    if (cumulative >= need) return items[i];
  }
  return items[hi - 1];
}

// The component's sub-block maxima, in a per-thread buffer the caller may
// reorder (valid until the next call on this thread).
template <typename T>
Vector<float>& sub_block_maxima(const ComponentRow<T>& row) {
  thread_local Vector<float> maxima;
  maxima.resize((row.length + kSubBlock - 1) / kSubBlock);
  for (size_t b = 0; b < maxima.size(); ++b) maxima[b] = sub_block_max(row.chunks, b);
  return maxima;
}

// A lower bound on the top_k-th largest logit of the row: the top_k-th
// largest sub-block max (sub-block maxima are distinct entries). -inf when
// there is no top-k or fewer sub-blocks than top_k.
template <typename T>
float top_k_floor(const ComponentRow<T>& row, int32_t top_k) {
  const int64_t blocks = (row.length + kSubBlock - 1) / kSubBlock;
  if (top_k <= 0 || top_k > blocks) return -BLENDIN_INF;
  Vector<float>& maxima = sub_block_maxima(row);
  std::nth_element(maxima.begin(), maxima.begin() + (top_k - 1), maxima.end(),
                   [](float a, float b) { return a > b; });
  return maxima[top_k - 1];
}

// A lower bound on the top-p cut without top-k: the largest sub-block
// maxima are entries, so once their mass alone reaches top_p of the
// component's (with a rounding margin), every kept entry is at least the
// last of them. -inf when they never do (a flat distribution).
template <typename T>
float top_p_floor(const ComponentRow<T>& row, float top_p, double total) {
  Vector<float>& maxima = sub_block_maxima(row);
  std::sort(maxima.begin(), maxima.end(), [](float a, float b) { return a > b; });
  const double need = double(top_p) * total * (1.0 + 1e-5);
  double mass = 0.0;
  for (const float m : maxima) {
    if (m == -BLENDIN_INF) break;
    mass += row.weight(m);
    if (mass >= need) return m;
  }
  return -BLENDIN_INF;
}

// Calls visit(j), in storage order, for the entries of the sub-blocks whose
// max reaches `floor` (the others hold no entry at or above it), skipping
// groups of entries a vectorised test finds all below `floor`: visit must
// do nothing for an entry below `floor`.
template <typename T, typename Visit>
void visit_blocks_reaching(const ComponentRow<T>& row, float floor, const Visit& visit) {
  const int64_t blocks = (row.length + kSubBlock - 1) / kSubBlock;
  float staging[kSubBlock];
  for (int64_t b = 0; b < blocks; ++b) {
    const float m = sub_block_max(row.chunks, b);
    if (m < floor || m == -BLENDIN_INF) continue;
    const int64_t begin = b * kSubBlock;
    const int64_t end = std::min(row.length, begin + kSubBlock);
    const float* raw = as_floats(row.logits + begin, end - begin, staging);
    for (int64_t group = begin; group < end; group += kScanGroup) {
      const int64_t group_end = std::min(end, group + kScanGroup);
      if (!any_at_least(raw + (group - begin), group_end - group, floor)) continue;
      for (int64_t j = group; j < group_end; ++j) visit(j);
    }
  }
}

// Draw after top-k / top-p: find the threshold entry, then walk the row in
// storage order over the entries that rank at or before it. Only sub-blocks
// that can hold a kept entry are read (with top-k, about top_k of them).
template <typename T>
int32_t draw_filtered(const ComponentRow<T>& row, float u, int32_t top_k, float top_p) {
  thread_local Vector<RankedLogit> items;
  items.clear();
  const bool top_k_on = top_k > 0 && top_k < row.length;
  const double component_total = top_k_on ? -1.0 : component_mass(row);
  const float floor = top_k_on ? top_k_floor(row, top_k) : top_p_floor(row, top_p, component_total);
  visit_blocks_reaching(row, floor, [&](int64_t j) {
    const int32_t id = row.base_id(j);
    const float x = to_float(row.logits[j]);
    if (id >= 0 && x != -BLENDIN_INF && x >= floor) items.push_back({x, id});
  });
  const RankedLogit cut = filter_threshold(row, items, top_k, top_p, component_total);
  auto kept_weight = [&](int64_t j, int32_t* id_out) {
    const int32_t id = row.base_id(j);
    *id_out = id;
    if (id < 0) return 0.0f;
    const float x = to_float(row.logits[j]);
    if (x == -BLENDIN_INF || ranks_before(cut.value, cut.id, x, id)) return 0.0f;
    return row.weight(x);
  };
  double total = 0.0;
  int32_t id;
  visit_blocks_reaching(row, cut.value, [&](int64_t j) { total += kept_weight(j, &id); });
  const double target = u * total;
  double cumulative = 0.0;
  int32_t last_positive = cut.id;
  bool done = false;
  visit_blocks_reaching(row, cut.value, [&](int64_t j) {
    if (done) return;
    const float w = kept_weight(j, &id);
    if (w <= 0.0f) return;
    cumulative += w;
    last_positive = id;
    done = cumulative > target;
  });
  return last_positive;
}

}  // namespace BLENDIN_CPU_VARIANT
}  // namespace blendin::cpu
