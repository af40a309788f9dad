// Torch-free entry points of the CUDA BlendIn step: raw pointers, the
// StepParams of blendin/step_params.h, two device buffers and a stream.
//
// Buffers (ask blend_step_workspace() for their sizes on the device that
// will run the step):
//  - tickets: one arrival counter per row. Zero before the first launch
//    that uses them; every launch leaves them zero again, so one buffer
//    serves any number of launches (and CUDA graph replays) without a
//    memset. Larger batches need more tickets: a fresh zeroed buffer, never
//    a region that served as scratch.
//  - scratch: the per-slice partials; needs no initialisation.
// Two launches that run at the same time must not share either buffer.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "blendin/step_params.h"
#include "kernel_variant.h"

namespace blendin::cuda {

struct WorkspaceSize {
  int64_t tickets;       // unsigned int counters needed (>= batch)
  size_t scratch_bytes;  // bytes of scratch needed
};

// Buffers needed by a step of `params` with logits of type T on `device`,
// run by `variant` (T as for launch_blend_step).
template <typename T>
WorkspaceSize blend_step_workspace(const StepParams& params, int device, KernelVariant variant);

// One step for every row of `params` (validated by the caller; per-row
// values that live on the device are range-checked by the kernel, which
// turns an out-of-range row into a bad row). T is float, Float16Bits or
// BFloat16Bits. Launches exactly one kernel of `variant` on `stream` (none
// when the batch is empty) and returns the launch status; never
// synchronises. A shape the cooperative grid cannot hold (a vocabulary of
// millions on a small GPU) runs the last_block kernel instead; the
// workspace query makes the same choice.
template <typename T>
cudaError_t launch_blend_step(const T* base_logits, const T* guide_logits, const StepParams& params,
                              KernelVariant variant, unsigned int* tickets, int64_t ticket_count,
                              void* scratch, size_t scratch_bytes, cudaStream_t stream);

}  // namespace blendin::cuda
