// A small CUDA block emulator for testing kernel logic on a CPU.
//
// Every thread of a block runs as a cooperative fiber (ucontext); blocks of
// a grid run one after another in a chosen order (launch), or side by side,
// all resident at once, for kernels whose blocks wait for one another
// (launch_resident: a block that spins on another block's write yields). __syncthreads and the
// warp collectives (shuffles, __reduce_*_sync) are real rendezvous points,
// so a divergent barrier or collective, or a missing barrier that lets a
// thread read stale shared memory, shows up as a deadlock report or a wrong
// result. Fibers are resumed in a shuffled order at every step.
//
// Not emulated: true parallelism between blocks (they interleave at
// barriers, collectives and spins), memory-model subtleties, timing,
// registers. Include
// this header before any kernel source; it defines BLENDIN_CUDA_EMULATION.
#pragma once

#define BLENDIN_CUDA_EMULATION 1

#include <cuda_bf16.h>  // host-side __half / __nv_bfloat16 and conversions
#include <cuda_fp16.h>
#include <setjmp.h>
#include <ucontext.h>
#include <vector_functions.h>
#include <vector_types.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#undef __shared__
#define __shared__ static  // one block runs at a time
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#undef __noinline__
#define __noinline__ __attribute__((noinline))

namespace cuda_emu {

// Fibers start through ucontext and then switch with _setjmp/_longjmp,
// which (unlike swapcontext) do not make a signal-mask system call.
struct Fiber {
  ucontext_t context;
  jmp_buf jump;
  bool started = false;
  int tid = 0;
  bool done = false;
  bool waiting = false;  // resumed but still blocked (for deadlock detection)
  unsigned collectives = 0;
};

struct WarpExchange {
  uint64_t values[2][32];
  int kinds[2][32];
  int arrived = 0;
  uint64_t generation = 0;
};

struct BlockState {
  unsigned index = 0;  // blockIdx.x
  std::vector<Fiber> fibers;
  std::unique_ptr<char[]> stacks;   // not zeroed: pages are touched only as used
  std::vector<long double> shared;  // BLENDIN_BLOCK_SHARED storage (aligned)
  long bytes_read = 0;              // BLENDIN_COUNT_READ: every byte read
  long bytes_first = 0;             //   bytes no block of the launch had read before
  jmp_buf scheduler;
  int current = -1;
  int live = 0;
  int barrier_arrived = 0;
  uint64_t barrier_generation = 0;
  std::vector<WarpExchange> warps;
  std::function<void()> body;
};

inline BlockState*& state() {
  static BlockState* s = nullptr;
  return s;
}
inline dim3& block_index() {
  static dim3 b;
  return b;
}
inline dim3& grid_dim() {
  static dim3 g;
  return g;
}
inline dim3& block_dim() {
  static dim3 d;
  return d;
}
inline uint64_t& rng() {
  static uint64_t r = 0x9E3779B97F4A7C15ull;
  return r;
}
inline uint64_t next_random() {
  uint64_t& x = rng();
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

// Bytes each block read (BLENDIN_COUNT_READ), by blockIdx.x, for the last
// launch: (all, first reads of the launch). First reads are what DRAM must
// deliver; the rest may hit L1/L2.
inline std::map<unsigned, std::pair<long, long>>& block_reads() {
  static std::map<unsigned, std::pair<long, long>> r;
  return r;
}
inline std::unordered_set<uintptr_t>& bytes_seen() {
  static std::unordered_set<uintptr_t> seen;
  return seen;
}

// Path counters (BLENDIN_TRACE in the kernel sources).
inline std::map<std::string, long>& traces() {
  static std::map<std::string, long> t;
  return t;
}
inline void trace(const char* name) { ++traces()[name]; }

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "cuda_emu: %s (block %u, thread %d)\n", what, block_index().x,
               state() && state()->current >= 0 ? state()->fibers[state()->current].tid : -1);
  std::abort();
}

inline Fiber& me() { return state()->fibers[state()->current]; }

// Back to the scheduler; `blocked` marks that no progress was made.
inline void yield(bool blocked) {
  Fiber& f = me();
  f.waiting = blocked;
  if (!_setjmp(f.jump)) _longjmp(state()->scheduler, 1);
}

inline dim3 thread_index() { return dim3(static_cast<unsigned>(me().tid), 0, 0); }

inline void syncthreads() {
  BlockState& s = *state();
  const uint64_t generation = s.barrier_generation;
  if (++s.barrier_arrived == s.live) {
    s.barrier_arrived = 0;
    ++s.barrier_generation;
    yield(false);
    return;
  }
  while (s.barrier_generation == generation) yield(true);
}

// All 32 lanes of the calling warp deposit a 64-bit payload; returns the
// 32 payloads once every lane has arrived. `kind` names the collective so
// that lanes calling different collectives are caught.
inline const uint64_t* warp_exchange(uint64_t payload, int kind) {
  BlockState& s = *state();
  Fiber& f = me();
  WarpExchange& w = s.warps[f.tid / 32];
  const uint64_t generation = w.generation;
  const int slot = static_cast<int>(generation & 1);
  w.values[slot][f.tid % 32] = payload;
  w.kinds[slot][f.tid % 32] = kind;
  if (++w.arrived == 32) {
    for (int lane = 1; lane < 32; ++lane) {
      if (w.kinds[slot][lane] != w.kinds[slot][0])
        fail("lanes of a warp called different collectives");
    }
    w.arrived = 0;
    ++w.generation;
    yield(false);
  } else {
    while (w.generation == generation) yield(true);
  }
  return w.values[slot];
}

template <typename T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8, "payload");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

inline void fiber_entry() {
  BlockState& s = *state();
  s.body();
  Fiber& f = me();
  f.done = true;
  --s.live;
  if (s.barrier_arrived > 0) fail("a thread exited while others wait at __syncthreads");
  _longjmp(s.scheduler, 1);
}

inline void count_read(const void* at, long bytes) {
  BlockState& s = *state();
  s.bytes_read += bytes;
  const uintptr_t first = reinterpret_cast<uintptr_t>(at);
  for (long i = 0; i < bytes; ++i) s.bytes_first += bytes_seen().insert(first + i).second ? 1 : 0;
}

// The calling block's shared memory of type T (one declaration per kernel).
template <typename T>
T& block_shared() {
  BlockState& s = *state();
  const size_t words = (sizeof(T) + sizeof(long double) - 1) / sizeof(long double);
  if (s.shared.size() < words) s.shared.resize(words);
  return *reinterpret_cast<T*>(s.shared.data());
}

// A thread polling a word another block will write: let the others run.
inline void spin_pause() { yield(true); }

inline void init_block(BlockState& s, unsigned index, int threads, size_t stack_bytes,
                       const std::function<void()>& body) {
  s.index = index;
  s.fibers.resize(threads);
  s.warps.resize((threads + 31) / 32);
  s.live = threads;
  s.body = body;
  s.stacks.reset(new char[stack_bytes * threads]);
  for (int t = 0; t < threads; ++t) {
    Fiber& f = s.fibers[t];
    f.tid = t;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = s.stacks.get() + stack_bytes * t;
    f.context.uc_stack.ss_size = stack_bytes;
    f.context.uc_link = nullptr;
    makecontext(&f.context, fiber_entry, 0);
  }
}

// Resumes every live thread of a block once, in a shuffled order; true if
// any of them got further than a wait.
inline bool step_block(BlockState& s) {
  state() = &s;
  block_index() = dim3(s.index, 1, 1);
  const int threads = static_cast<int>(s.fibers.size());
  std::vector<int> order(threads);
  for (int t = 0; t < threads; ++t) order[t] = t;
  for (int i = threads - 1; i > 0; --i) std::swap(order[i], order[next_random() % (i + 1)]);
  bool progress = false;
  for (int t : order) {
    Fiber& f = s.fibers[t];
    if (f.done) continue;
    s.current = t;
    if (!_setjmp(s.scheduler)) {
      if (f.started) _longjmp(f.jump, 1);
      f.started = true;
      setcontext(&f.context);
    }
    s.current = -1;
    if (!f.waiting) progress = true;
  }
  state() = nullptr;
  return progress;
}

[[noreturn]] inline void report_deadlock(const BlockState& s) {
  std::fprintf(stderr, "cuda_emu: deadlock in block %u (%d live threads; %d at the barrier)\n",
               s.index, s.live, s.barrier_arrived);
  for (size_t w = 0; w < s.warps.size(); ++w) {
    if (s.warps[w].arrived > 0) {
      std::fprintf(stderr, "  warp %zu: %d lanes wait in a collective\n", w, s.warps[w].arrived);
    }
  }
  for (const auto& [name, count] : traces())
    std::fprintf(stderr, "  trace %s: %ld\n", name.c_str(), count);
  std::abort();
}

// Runs one block of `threads` threads to completion.
inline void run_block(unsigned index, int threads, const std::function<void()>& body) {
  BlockState s;
  init_block(s, index, threads, 256 * 1024, body);
  int idle_rounds = 0;
  while (s.live > 0) {
    idle_rounds = step_block(s) ? 0 : idle_rounds + 1;
    if (idle_rounds > 2) report_deadlock(s);
  }
  block_reads()[index] = {s.bytes_read, s.bytes_first};
}

// Launches a 1-D grid; blocks run in `order` (all of them, any order).
inline void launch(const std::vector<unsigned>& order, unsigned grid, int threads,
                   const std::function<void()>& kernel) {
  grid_dim() = dim3(grid, 1, 1);
  block_dim() = dim3(static_cast<unsigned>(threads), 1, 1);
  block_reads().clear();
  bytes_seen().clear();
  for (unsigned b : order) run_block(b, threads, kernel);
}

// Launches a 1-D grid whose blocks are all resident at once (a cooperative
// launch): they start in `order` and are interleaved, each round in a new
// shuffled order, until all finish; a round in which no thread of any block
// gets further is a deadlock.
inline void launch_resident(const std::vector<unsigned>& order, unsigned grid, int threads,
                            const std::function<void()>& kernel) {
  grid_dim() = dim3(grid, 1, 1);
  block_dim() = dim3(static_cast<unsigned>(threads), 1, 1);
  block_reads().clear();
  bytes_seen().clear();
  std::vector<std::unique_ptr<BlockState>> blocks;
  for (unsigned b : order) {
    blocks.emplace_back(new BlockState());
    init_block(*blocks.back(), b, threads, 64 * 1024, kernel);
  }
  std::vector<size_t> turn(blocks.size());
  for (size_t i = 0; i < turn.size(); ++i) turn[i] = i;
  int idle_rounds = 0;
  for (;;) {
    bool live = false, progress = false;
    for (size_t i = turn.size(); i > 1; --i) std::swap(turn[i - 1], turn[next_random() % i]);
    for (size_t i : turn) {
      BlockState& s = *blocks[i];
      if (s.live == 0) continue;
      live = true;
      if (step_block(s)) progress = true;
    }
    if (!live) break;
    idle_rounds = progress ? 0 : idle_rounds + 1;
    if (idle_rounds > 2) {
      for (const auto& s : blocks) {
        if (s->live > 0) report_deadlock(*s);
      }
    }
  }
  for (const auto& s : blocks) block_reads()[s->index] = {s->bytes_read, s->bytes_first};
}

}  // namespace cuda_emu

#define threadIdx (::cuda_emu::thread_index())
#define blockIdx (::cuda_emu::block_index())
#define blockDim (::cuda_emu::block_dim())
#define gridDim (::cuda_emu::grid_dim())

inline void __syncthreads() { cuda_emu::syncthreads(); }
inline void __threadfence() {}

template <typename T>
T __shfl_sync(unsigned, T v, int src) {
  const uint64_t* all = cuda_emu::warp_exchange(cuda_emu::to_bits(v), 1);
  return cuda_emu::from_bits<T>(all[src & 31]);
}
template <typename T>
T __shfl_xor_sync(unsigned, T v, int mask) {
  const uint64_t* all = cuda_emu::warp_exchange(cuda_emu::to_bits(v), 2);
  return cuda_emu::from_bits<T>(all[(cuda_emu::me().tid % 32) ^ mask]);
}
template <typename T>
T __shfl_down_sync(unsigned, T v, unsigned delta) {
  const uint64_t* all = cuda_emu::warp_exchange(cuda_emu::to_bits(v), 3);
  const unsigned lane = cuda_emu::me().tid % 32;
  return lane + delta < 32 ? cuda_emu::from_bits<T>(all[lane + delta]) : v;
}
template <typename T>
T __shfl_up_sync(unsigned, T v, unsigned delta) {
  const uint64_t* all = cuda_emu::warp_exchange(cuda_emu::to_bits(v), 4);
  const unsigned lane = cuda_emu::me().tid % 32;
  return lane >= delta ? cuda_emu::from_bits<T>(all[lane - delta]) : v;
}
inline unsigned __reduce_max_sync(unsigned, unsigned v) {
  const uint64_t* all = cuda_emu::warp_exchange(v, 5);
  unsigned r = 0;
  for (int i = 0; i < 32; ++i)
    r = static_cast<unsigned>(all[i]) > r ? static_cast<unsigned>(all[i]) : r;
  return r;
}
inline unsigned __reduce_min_sync(unsigned, unsigned v) {
  const uint64_t* all = cuda_emu::warp_exchange(v, 6);
  unsigned r = 0xffffffffu;
  for (int i = 0; i < 32; ++i)
    r = static_cast<unsigned>(all[i]) < r ? static_cast<unsigned>(all[i]) : r;
  return r;
}

inline unsigned __reduce_or_sync(unsigned, unsigned v) {
  const uint64_t* all = cuda_emu::warp_exchange(v, 7);
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= static_cast<unsigned>(all[i]);
  return r;
}

inline unsigned atomicAdd(unsigned* p, unsigned v) {
  const unsigned old = *p;
  *p = old + v;
  return old;
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  const unsigned long long old = *p;
  *p = old + v;
  return old;
}
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
  const unsigned long long old = *p;
  *p = v < old ? v : old;
  return old;
}
inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v) {
  const unsigned long long old = *p;
  *p = v > old ? v : old;
  return old;
}
inline int __clzll(long long x) {
  return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x));
}
inline unsigned atomicExch(unsigned* p, unsigned v) {
  const unsigned old = *p;
  *p = v;
  return old;
}

template <typename T>
T __ldg(const T* p) {
  return *p;
}
template <typename T>
T __ldcg(const T* p) {
  return *p;
}

inline unsigned __float_as_uint(float x) {
  return cuda_emu::from_bits<unsigned>(cuda_emu::to_bits(x));
}
inline float __uint_as_float(unsigned x) {
  return cuda_emu::from_bits<float>(cuda_emu::to_bits(x));
}
inline float __int_as_float(int x) { return cuda_emu::from_bits<float>(cuda_emu::to_bits(x)); }
inline unsigned long long __float2ull_rn(float x) {
  return static_cast<unsigned long long>(std::nearbyint(x));
}
