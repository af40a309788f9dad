// Waiting between the blocks of one row's team (cooperative kernel). Safe
// only because the whole grid is resident (coop_plan.h). A block's writes
// are published by a fence before its arrival; readers of another block's
// workspace writes use load_cg (L1 is not coherent across SMs).
#pragma once

#include "coop_plan.h"
#include "device_common.cuh"

namespace blendin::cuda {

// The team of a row: its sync words, its size and this block's place.
struct Team {
  CoopSync* sync;  // the row's zeroed words
  int32_t size;    // a team of one waits for nobody
  int32_t member;
};

// Barrier `k` (1, 2, ...) of the row: true in every thread of the last block
// to arrive (the leader), which must publish and then call team_release().
// Other blocks call team_wait() next.
__device__ __forceinline__ bool team_arrive(const Team& team, unsigned int k, int& flag) {
  __syncthreads();  // the block's writes are done
  if (team.size == 1) return true;
  if (threadIdx.x == 0) {
    __threadfence();
    const unsigned int before = atomicAdd(&team.sync->arrived, 1u);
    flag = before == k * static_cast<unsigned int>(team.size) - 1u;
  }
  __syncthreads();
  const bool leader = flag != 0;
  __syncthreads();  // flag is reused
  if (leader) __threadfence();
  return leader;
}

__device__ __forceinline__ void team_release(const Team& team, unsigned int k) {
  if (team.size == 1) return;
  __syncthreads();  // what the leader publishes is written
  if (threadIdx.x == 0) {
    __threadfence();
    atomicExch(&team.sync->released, k);
  }
}

__device__ __forceinline__ void team_wait(const Team& team, unsigned int k) {
  if (team.size == 1) return;
  if (threadIdx.x == 0) {
    while (load_volatile(&team.sync->released) < k) spin_pause();
    __threadfence();
  }
  __syncthreads();
}

// Every member takes this ticket when done with the row: true in every
// thread of the last one, which may finish the row's last phase and has
// reset the barrier words for the next launch (everyone else has passed
// every wait by then); it clears the select words itself once it has read
// them (clear_select_words).
__device__ __forceinline__ bool team_finish(const Team& team, int& flag) {
  __syncthreads();  // a team of one still reads what all its threads wrote
  if (team.size == 1) return true;
  if (threadIdx.x == 0) {
    __threadfence();
    const unsigned int before = atomicAdd(&team.sync->finished, 1u);
    const bool last = before == static_cast<unsigned int>(team.size) - 1u;
    if (last) {
      atomicExch(&team.sync->arrived, 0u);
      atomicExch(&team.sync->released, 0u);
      atomicExch(&team.sync->finished, 0u);
    }
    flag = last;
  }
  __syncthreads();
  const bool last = flag != 0;
  __syncthreads();
  if (last) __threadfence();
  return last;
}

}  // namespace blendin::cuda

namespace blendin::cuda {

// The row's histogram and gather counter back to zero (the finisher of a
// select, after its last read of them).
__device__ __forceinline__ void clear_select_words(CoopSync* sync) {
  __syncthreads();
  for (int b = threadIdx.x; b < kCoopSelectBins; b += kThreads) {
    sync->bin_count[b] = 0u;
    sync->bin_mass[b] = 0ull;
  }
  if (threadIdx.x == 0) sync->gathered = 0u;
}

}  // namespace blendin::cuda
