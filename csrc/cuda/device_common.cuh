// Device building blocks of the CUDA BlendIn step: logit loads and
// conversions, order-preserving keys, register top-K lists, and warp/block
// reductions and scans. Torch-free. The arithmetic itself (exp, partial
// merges, the decision) comes from the shared blendin/*.h headers.
//
// The same source also compiles as host C++ inside the block emulator of
// tests/cuda/emu (which supplies threadIdx, __syncthreads, the warp
// intrinsics and atomics), so the kernel logic is tested without a GPU.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#elif !defined(BLENDIN_CUDA_EMULATION)
#error "device_common.cuh needs nvcc or tests/cuda/emu/cuda_emu.h"
#endif

#include "blendin/blend_math.h"
#include "blendin/step_params.h"

// Marks that a block took a given path (counted by the emulator so tests can
// check that each path of the kernel was exercised; nothing on a GPU).
#if defined(BLENDIN_CUDA_EMULATION)
#define BLENDIN_TRACE(name) ::cuda_emu::trace(name)
#else
#define BLENDIN_TRACE(name) ((void)0)
#endif

// Bytes of logits a block reads, and where (the emulator's read counters:
// tests check that no mode reads a row more than it must; nothing on a GPU).
#if defined(BLENDIN_CUDA_EMULATION)
#define BLENDIN_COUNT_READ(ptr, bytes) ::cuda_emu::count_read(ptr, bytes)
#else
#define BLENDIN_COUNT_READ(ptr, bytes) ((void)0)
#endif

namespace blendin::cuda {

constexpr int kThreads = 256;  // threads per block, every block of the step
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;

// ------------------------------------------------------------ loads ----
// Elements per 16-byte vector load.
template <typename T>
struct VecTraits {
  static constexpr int kSize = 16 / sizeof(T);
};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ void unpack(const uint4& raw, float (&x)[4]) {
  x[0] = __uint_as_float(raw.x);
  x[1] = __uint_as_float(raw.y);
  x[2] = __uint_as_float(raw.z);
  x[3] = __uint_as_float(raw.w);
}

template <typename T>
__device__ __forceinline__ void unpack(const uint4& raw, float (&x)[8]);

template <>
__device__ __forceinline__ void unpack<__half>(const uint4& raw, float (&x)[8]) {
  const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    x[2 * i] = f.x;
    x[2 * i + 1] = f.y;
  }
}

template <>
__device__ __forceinline__ void unpack<__nv_bfloat16>(const uint4& raw, float (&x)[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    x[2 * i] = f.x;
    x[2 * i + 1] = f.y;
  }
}

template <typename T>
__device__ __forceinline__ void unpack_vec(const uint4& raw, float (&x)[VecTraits<T>::kSize]) {
  if constexpr (sizeof(T) == 4) {
    unpack(raw, x);
  } else {
    unpack<T>(raw, x);
  }
}

// Reads (cache-global) a value another block wrote in this launch: L1 is
// not coherent across SMs, so workspace partials bypass it.
template <typename U>
__device__ __forceinline__ U load_cg(const U* p) {
  return __ldcg(p);
}

// A block's shared memory declared inside a kernel. The emulator runs the
// blocks of a cooperative grid side by side, so there each block gets its own.
#if defined(BLENDIN_CUDA_EMULATION)
#define BLENDIN_BLOCK_SHARED(Type, name) Type& name = ::cuda_emu::block_shared<Type>()
#else
#define BLENDIN_BLOCK_SHARED(Type, name) __shared__ Type name
#endif

// Spinning on a word another block will write: sleep a little between
// polls (the emulator switches to another block instead).
__device__ __forceinline__ void spin_pause() {
#if defined(BLENDIN_CUDA_EMULATION)
  ::cuda_emu::spin_pause();
#else
  __nanosleep(100);
#endif
}

__device__ __forceinline__ unsigned int load_volatile(const unsigned int* p) {
  return *static_cast<const volatile unsigned int*>(p);
}

// ------------------------------------------------------------- keys ----
// An unsigned key with the order of the float (non-NaN), -0 folded onto +0
// so that equal values share a key as they do for ranks_before().
__device__ __forceinline__ uint32_t order_key(float x) {
  uint32_t bits = __float_as_uint(x);
  if (bits == 0x80000000u) bits = 0u;
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

__device__ __forceinline__ float key_value(uint32_t key) {
  const uint32_t bits = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  return __uint_as_float(bits);
}

// 64-bit key whose order is the rank order of ranks_before(): larger logit
// first, ties to the smaller id (ids lie in [0, 2^31)).
__device__ __forceinline__ uint64_t rank_key(float x, int32_t id) {
  return (static_cast<uint64_t>(order_key(x)) << 32) | static_cast<uint32_t>(0x7fffffff - id);
}

// --------------------------------------------------- register top-K ----
// The kTopK best (logit, id) pairs one thread has seen, best first, in
// registers (every index is a compile-time constant after unrolling).
// Empty slots hold (-inf, INT32_MAX); -inf logits are never inserted.
struct RegTopK {
  float value[kTopK];
  int32_t id[kTopK];
};

__device__ __forceinline__ void regtopk_clear(RegTopK& t) {
#pragma unroll
  for (int k = 0; k < kTopK; ++k) {
    t.value[k] = -BLENDIN_INF;
    t.id[k] = INT32_MAX;
  }
}

// Bubbles (x, id) into the sorted list; the last entry falls off.
__device__ __forceinline__ void regtopk_insert(RegTopK& t, float x, int32_t id) {
#pragma unroll
  for (int k = 0; k < kTopK; ++k) {
    const bool before = ranks_before(x, id, t.value[k], t.id[k]);
    const float kept_value = t.value[k];
    const int32_t kept_id = t.id[k];
    t.value[k] = before ? x : kept_value;
    t.id[k] = before ? id : kept_id;
    x = before ? kept_value : x;
    id = before ? kept_id : id;
  }
}

// Inserts (x, id) when it ranks before the current K-th entry.
__device__ __forceinline__ void regtopk_offer(RegTopK& t, float x, int32_t id) {
  if (x != -BLENDIN_INF && ranks_before(x, id, t.value[kTopK - 1], t.id[kTopK - 1])) {
    regtopk_insert(t, x, id);
  }
}

__device__ __forceinline__ void regtopk_pop(RegTopK& t) {
#pragma unroll
  for (int k = 0; k + 1 < kTopK; ++k) {
    t.value[k] = t.value[k + 1];
    t.id[k] = t.id[k + 1];
  }
  t.value[kTopK - 1] = -BLENDIN_INF;
  t.id[kTopK - 1] = INT32_MAX;
}

__device__ __forceinline__ int lane_id() { return threadIdx.x & 31; }
__device__ __forceinline__ int warp_id() { return threadIdx.x >> 5; }

// Merges the 32 lanes' lists (consuming them): afterwards lane k < kTopK
// holds the warp's k-th best pair, (-inf, INT32_MAX) where there are fewer.
// Each round pops the best head with two single-instruction reductions.
__device__ __forceinline__ void warp_topk_merge(RegTopK& t, float& out_value, int32_t& out_id) {
  const uint32_t empty_key = order_key(-BLENDIN_INF);
  out_value = -BLENDIN_INF;
  out_id = INT32_MAX;
#pragma unroll 1
  for (int k = 0; k < kTopK; ++k) {
    const uint32_t key = order_key(t.value[0]);
    const uint32_t best = __reduce_max_sync(kFullMask, key);
    if (best == empty_key) break;  // every list is empty (uniform)
    const uint32_t head_id = static_cast<uint32_t>(t.id[0]);
    const uint32_t best_id = __reduce_min_sync(kFullMask, key == best ? head_id : 0xffffffffu);
    if (key == best && head_id == best_id) regtopk_pop(t);
    if (lane_id() == k) {
      out_value = key_value(best);
      out_id = static_cast<int32_t>(best_id);
    }
  }
}

// ------------------------------------------------ partial reductions ----
// Softmax partials combine in two steps: the top-K merge already yields the
// group's maximum (and first argmax), so every member rescales its sums to
// that maximum once and plain additions finish -- the arithmetic of
// merge_partial() with one exp per member instead of one per tree level.
struct RescaledSums {
  float sum;
  float sum_tempered;
  int bad;
};

__device__ __forceinline__ RescaledSums rescale_to(const SoftmaxPartial& p, float max,
                                                   float inv_temperature) {
  // fast_exp(-inf or NaN) is 0: empty members (and bad rows) add nothing
  return RescaledSums{p.sum * fast_exp(p.max - max),
                      p.sum_tempered * fast_exp((p.max - max) * inv_temperature), p.bad};
}

// Sum over the warp, the same bits in every lane (float addition commutes).
__device__ __forceinline__ RescaledSums warp_sum(RescaledSums s) {
#pragma unroll
  for (int mask = 16; mask > 0; mask >>= 1) {
    s.sum += __shfl_xor_sync(kFullMask, s.sum, mask);
    s.sum_tempered += __shfl_xor_sync(kFullMask, s.sum_tempered, mask);
  }
  s.bad = __reduce_or_sync(kFullMask, static_cast<unsigned>(s.bad)) != 0u;
  return s;
}

// Scratch for block-wide reductions and scans (one slot per warp).
union ReduceScratch {
  double f64[kWarps];
  unsigned long long u64[kWarps];
  long long i64[kWarps];
  RescaledSums sums[kWarps];
  MixtureArgmax mixture[kWarps];
};

// Sum over the block, returned to every thread (warps add in a fixed order).
__device__ __forceinline__ RescaledSums block_sum(RescaledSums s, ReduceScratch& scratch) {
  s = warp_sum(s);
  __syncthreads();  // scratch may still be read from a previous use
  if (lane_id() == 0) scratch.sums[warp_id()] = s;
  __syncthreads();
  RescaledSums total = scratch.sums[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) {
    total.sum += scratch.sums[w].sum;
    total.sum_tempered += scratch.sums[w].sum_tempered;
    total.bad |= scratch.sums[w].bad;
  }
  return total;
}

__device__ __forceinline__ void mixture_shfl_merge(MixtureArgmax& m, int mask) {
  MixtureArgmax o;
  o.best = __shfl_xor_sync(kFullMask, m.best, mask);
  o.token = __shfl_xor_sync(kFullMask, m.token, mask);
  mixture_merge(m, o);
}

// Argmax of the mixture over the block (a total order, so any tree gives
// the same answer); returned to every thread.
__device__ __forceinline__ MixtureArgmax block_mixture_argmax(MixtureArgmax m,
                                                              ReduceScratch& scratch) {
#pragma unroll
  for (int mask = 16; mask > 0; mask >>= 1) mixture_shfl_merge(m, mask);
  __syncthreads();
  if (lane_id() == 0) scratch.mixture[warp_id()] = m;
  __syncthreads();
  MixtureArgmax best = scratch.mixture[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) mixture_merge(best, scratch.mixture[w]);
  return best;
}

struct MaxOp {
  template <typename U>
  __device__ __forceinline__ U operator()(U a, U b) const {
    return a > b ? a : b;
  }
};
struct MinOp {
  template <typename U>
  __device__ __forceinline__ U operator()(U a, U b) const {
    return a < b ? a : b;
  }
};
struct SumOp {
  template <typename U>
  __device__ __forceinline__ U operator()(U a, U b) const {
    return a + b;
  }
};

template <typename U>
__device__ __forceinline__ U* scratch_slots(ReduceScratch& s);
template <>
__device__ __forceinline__ double* scratch_slots<double>(ReduceScratch& s) {
  return s.f64;
}
template <>
__device__ __forceinline__ unsigned long long* scratch_slots<unsigned long long>(ReduceScratch& s) {
  return s.u64;
}
template <>
__device__ __forceinline__ long long* scratch_slots<long long>(ReduceScratch& s) {
  return s.i64;
}

// Reduction of a commutative, associative op over the block, returned to
// every thread. Lanes combine in a butterfly, warps in a fixed order, so the
// result is the same bits in every thread and on every run.
template <typename U, typename Op>
__device__ __forceinline__ U block_reduce(U v, Op op, ReduceScratch& scratch) {
#pragma unroll
  for (int mask = 16; mask > 0; mask >>= 1) v = op(v, __shfl_xor_sync(kFullMask, v, mask));
  U* slots = scratch_slots<U>(scratch);
  __syncthreads();
  if (lane_id() == 0) slots[warp_id()] = v;
  __syncthreads();
  U r = slots[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) r = op(r, slots[w]);
  return r;
}

// Exclusive prefix sum over the block in thread order; `total` receives the
// block's sum. Same value in every thread that needs it; deterministic.
template <typename U>
__device__ __forceinline__ U block_exclusive_scan(U v, U& total, ReduceScratch& scratch) {
  U inclusive = v;
#pragma unroll
  for (int delta = 1; delta < 32; delta <<= 1) {
    const U up = __shfl_up_sync(kFullMask, inclusive, delta);
    if (lane_id() >= delta) inclusive = inclusive + up;
  }
  U exclusive = __shfl_up_sync(kFullMask, inclusive, 1);
  if (lane_id() == 0) exclusive = U(0);
  U* slots = scratch_slots<U>(scratch);
  __syncthreads();
  if (lane_id() == 31) slots[warp_id()] = inclusive;
  __syncthreads();
  U before = U(0);
  total = U(0);
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp_id()) before = before + slots[w];
    total = total + slots[w];
  }
  return before + exclusive;
}

}  // namespace blendin::cuda
