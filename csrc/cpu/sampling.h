// Drawing one token from one component (base or mapped guide) of a row at
// temperature T, optionally filtered by top-k then top-p, by inverse CDF in
// storage order. Called at most once per row, after the statistics pass.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "blendin/blend_math.h"
#include "chunk_stats.h"
#include "float_load.h"

namespace blendin::cpu {

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
template <typename T>
int32_t draw_unfiltered(const ComponentRow<T>& row, float u) {
  const int64_t num_chunks = (row.length + kChunk - 1) / kChunk;
  double total = 0.0;
  for (int64_t c = 0; c < num_chunks; ++c) {
    const SoftmaxPartial& s = row.chunks[c].softmax;
    if (s.max != -BLENDIN_INF) total += double(s.sum_tempered) * row.weight(s.max);
  }
  double target = u * total;
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
// mass reaches top_p of that set's mass. Expected O(n): nth_element halves
// the range while the prefix mass decides which half holds the cut.
template <typename T>
RankedLogit filter_threshold(const ComponentRow<T>& row, std::vector<RankedLogit>& items,
                             int32_t top_k, float top_p) {
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
  float need = top_p * mass;
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

// Draw after top-k / top-p: find the threshold entry, then walk the row in
// storage order over the entries that rank at or before it.
template <typename T>
int32_t draw_filtered(const ComponentRow<T>& row, float u, int32_t top_k, float top_p) {
  thread_local std::vector<RankedLogit> items;
  items.clear();
  for (int64_t j = 0; j < row.length; ++j) {
    const int32_t id = row.base_id(j);
    const float x = to_float(row.logits[j]);
    if (id >= 0 && x != -BLENDIN_INF) items.push_back({x, id});
  }
  const RankedLogit cut = filter_threshold(row, items, top_k, top_p);
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
  for (int64_t j = 0; j < row.length; ++j) total += kept_weight(j, &id);
  const double target = u * total;
  double cumulative = 0.0;
  int32_t last_positive = cut.id;
  for (int64_t j = 0; j < row.length; ++j) {
    const float w = kept_weight(j, &id);
    if (w <= 0.0f) continue;
    cumulative += w;
    last_positive = id;
    if (cumulative > target) return id;
  }
  return last_positive;
}

}  // namespace blendin::cpu
