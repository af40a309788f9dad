// The statistics pass of one block over one slice of one model row: bad
// flag, online softmax partial (max, sum, tempered sum, first argmax) and
// the slice's top-K candidates, from a single read of the logits with
// 16-byte vector loads. Also the generic row visitor that the finishing
// block reuses for its own passes.
#pragma once

#include "device_common.cuh"
#include "launch_plan.h"

namespace blendin::cuda {

constexpr int kUnroll = 4;  // vector loads in flight per thread

// One model row as the kernel reads it.
template <typename T>
struct RowView {
  const T* logits;
  int64_t length;      // entries in storage order
  VocabMap map;        // used when `mapped`: a guide row under a vocabulary map
  bool mapped;         // ids are base ids through `map`
  int64_t base_vocab;  // valid base ids are [0, base_vocab)

  // Base id of storage index j, or -1 when the entry cannot be chosen
  // (no base twin, or an out-of-range map entry).
  __device__ __forceinline__ int32_t base_id(int64_t j) const {
    if (!mapped) return static_cast<int32_t>(j);
    const int64_t id = map.base_of(j);
    return (id >= 0 && id < base_vocab) ? static_cast<int32_t>(id) : -1;
  }
  __device__ __forceinline__ float at(int64_t j) const {
    BLENDIN_COUNT_READ(logits + j, sizeof(T));
    return to_float(logits[j]);
  }
};

template <typename T>
__device__ __forceinline__ void load_scalars(const T* row, int64_t start, int n,
                                             float (&x)[VecTraits<T>::kSize]) {
#pragma unroll
  for (int k = 0; k < VecTraits<T>::kSize; ++k)
    x[k] = k < n ? to_float(row[start + k]) : -BLENDIN_INF;
  BLENDIN_COUNT_READ(row + start, static_cast<int64_t>(n) * static_cast<int64_t>(sizeof(T)));
}

// Calls f(x[kVec], first_index, count) over [begin, end) of a row, each
// thread on its own vectors. Rows need not be 16-byte aligned (odd strides,
// views): thread 0 reads the unaligned head first and the last thread the
// tail after its vectors, so every thread sees its indices in increasing
// order. Entries past `count` are -inf padding.
template <typename T, typename F>
__device__ __forceinline__ void for_each_vector(const T* row, int64_t begin, int64_t end, F& f) {
  constexpr int kVec = VecTraits<T>::kSize;
  const uintptr_t addr = reinterpret_cast<uintptr_t>(row + begin);
  int64_t head = static_cast<int64_t>(((16 - (addr & 15)) & 15) / sizeof(T));
  head = head < end - begin ? head : end - begin;
  const int64_t body = begin + head;
  const int64_t vectors = (end - body) / kVec;
  const int64_t tail = body + vectors * kVec;
  if (threadIdx.x == 0 && head > 0) {
    float x[kVec];
    load_scalars(row, begin, static_cast<int>(head), x);
    f(x, begin, static_cast<int>(head));
  }
  const uint4* vec = reinterpret_cast<const uint4*>(row + body);
  for (int64_t v = threadIdx.x; v < vectors; v += kThreads * kUnroll) {
    uint4 raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (v + u * kThreads < vectors) {
        BLENDIN_COUNT_READ(vec + v + u * kThreads, 16);
        raw[u] = __ldg(vec + v + u * kThreads);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (v + u * kThreads < vectors) {
        float x[kVec];
        unpack_vec<T>(raw[u], x);
        f(x, body + (v + u * kThreads) * kVec, kVec);
      }
    }
  }
  if (threadIdx.x == kThreads - 1 && tail < end) {
    float x[kVec];
    load_scalars(row, tail, static_cast<int>(end - tail), x);
    f(x, tail, static_cast<int>(end - tail));
  }
}

// Calls f(x, j) for every entry of [begin, end), one entry per thread and
// step: the compact loop of the finishing block's passes (the hot pass
// above is unrolled for memory parallelism instead).
template <typename T, typename F>
__device__ __forceinline__ void for_each_entry(const T* row, int64_t begin, int64_t end, F& f) {
  for (int64_t j = begin + threadIdx.x; j < end; j += kThreads) {
    BLENDIN_COUNT_READ(row + j, sizeof(T));
    f(to_float(row[j]), j);
  }
}

// Per-thread accumulator of the statistics pass. kMapped: guide logits
// under a vocabulary map (unmapped entries masked, ids are base ids, an
// out-of-range map entry makes the row bad). kTempered: also the sum at the
// row's sampling temperature (else it mirrors the plain sum, as on the CPU).
template <int kVec, bool kMapped, bool kTempered>
struct SliceAccumulator {
  RegTopK top;
  float max;
  float sum;
  float sum_tempered;
  int bad;
  float inv_temperature;
  VocabMap map;
  int64_t base_vocab;

  __device__ __forceinline__ void init(float inv_t, const VocabMap& vocab_map, int64_t vocab) {
    regtopk_clear(top);
    max = -BLENDIN_INF;
    sum = 0.0f;
    sum_tempered = 0.0f;
    bad = 0;
    inv_temperature = inv_t;
    map = vocab_map;
    base_vocab = vocab;
  }

  __device__ __forceinline__ void operator()(const float (&raw)[kVec], int64_t first, int count) {
    float x[kVec];
    int32_t id[kVec];
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      bad |= is_bad_logit(raw[k]) ? 1 : 0;  // -inf padding is not bad
      x[k] = raw[k];
      id[k] = static_cast<int32_t>(first + k);
      if (kMapped) {
        const int64_t b = k < count ? map.base_of(first + k) : -1;
        bad |= (b < -1 || b >= base_vocab) ? 1 : 0;
        const bool ok = b >= 0 && b < base_vocab;
        x[k] = ok ? raw[k] : -BLENDIN_INF;
        id[k] = ok ? static_cast<int32_t>(b) : -1;
      }
    }
    float vmax = x[0];
#pragma unroll
    for (int k = 1; k < kVec; ++k) vmax = x[k] > vmax ? x[k] : vmax;
    if (vmax > max) {  // rescale the running sums to the new maximum
      sum *= fast_exp(max - vmax);
      if (kTempered) sum_tempered *= fast_exp((max - vmax) * inv_temperature);
      max = vmax;
    }
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      sum += fast_exp(x[k] - max);
      if (kTempered) sum_tempered += fast_exp((x[k] - max) * inv_temperature);
      if (kMapped) {
        regtopk_offer(top, x[k], id[k]);
      } else if (x[k] > top.value[kTopK - 1]) {
        // ids grow along a thread's entries, so a tie never ranks before
        regtopk_insert(top, x[k], id[k]);
      }
    }
  }

  __device__ __forceinline__ SoftmaxPartial partial() const {
    SoftmaxPartial p;
    p.max = max;
    p.sum = sum;
    p.sum_tempered = kTempered ? sum_tempered : sum;
    p.argmax = top.id[0];
    p.bad = bad;
    return p;
  }
};

// Shared memory of the block-level merge of the statistics pass.
struct SliceScratch {
  float top_value[kWarps][kTopK];
  int32_t top_id[kWarps][kTopK];
  float max;
  int32_t argmax;
};

// Loads (value, id) pairs lane, lane + 32, ... of a list of `n` entries into
// a register list per lane, then merges the warp: lane k < kTopK ends up
// with the k-th best pair.
template <typename Load>
__device__ __forceinline__ void warp_topk_of_entries(int n, const Load& load, float& out_value,
                                                     int32_t& out_id) {
  RegTopK t;
  regtopk_clear(t);
  for (int i = lane_id(); i < n; i += 32) {
    float value;
    int32_t id;
    load(i, value, id);
    regtopk_offer(t, value, id);
  }
  warp_topk_merge(t, out_value, out_id);
}

// Block-wide statistics of [begin, end) of `row`, written to `out` (a
// workspace slot): the block's top-K first (its head is the max and first
// argmax), then the sums rescaled to that max.
template <typename T, bool kMapped, bool kTempered>
__device__ void slice_statistics(const RowView<T>& row, int64_t begin, int64_t end, float inv_t,
                                 SliceScratch& scratch, ReduceScratch& reduce, SlicePartial* out) {
  SliceAccumulator<VecTraits<T>::kSize, kMapped, kTempered> acc;
  acc.init(inv_t, row.map, row.base_vocab);
  for_each_vector(row.logits, begin, end, acc);

  float value;
  int32_t id;
  warp_topk_merge(acc.top, value, id);
  if (lane_id() < kTopK) {
    scratch.top_value[warp_id()][lane_id()] = value;
    scratch.top_id[warp_id()][lane_id()] = id;
  }
  __syncthreads();
  if (warp_id() == 0) {
    auto load = [&](int i, float& v, int32_t& d) {
      v = scratch.top_value[i / kTopK][i % kTopK];
      d = scratch.top_id[i / kTopK][i % kTopK];
    };
    warp_topk_of_entries(kWarps * kTopK, load, value, id);
    if (lane_id() < kTopK) {
      out->top_value[lane_id()] = value;
      out->top_id[lane_id()] = id;
    }
    if (lane_id() == 0) {
      scratch.max = value;
      scratch.argmax = id;
    }
  }
  __syncthreads();
  const float max = scratch.max;
  const RescaledSums sums = block_sum(rescale_to(acc.partial(), max, inv_t), reduce);
  if (threadIdx.x == 0) {
    out->softmax = SoftmaxPartial{max, sums.sum, kTempered ? sums.sum_tempered : sums.sum,
                                  scratch.argmax, sums.bad};
  }
}

}  // namespace blendin::cuda
