// Torch-free entry points of the CUDA BlendIn step: raw pointers, the
// StepParams of blendin/step_params.h, a workspace and a stream.
//
// Workspace contract: ask blend_step_workspace() for its size on the device
// that will run the step. Its first `zeroed_bytes` (per-row arrival tickets)
// must be zero before the first launch that uses the buffer; every launch
// leaves them zero again, so one buffer serves any number of launches (and
// CUDA graph replays) with no memset. The rest needs no initialisation. One
// buffer must not serve two launches that run at the same time.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "blendin/step_params.h"

namespace blendin::cuda {

struct WorkspaceSize {
  size_t zeroed_bytes;  // prefix that must start at zero (and stays zero)
  size_t total_bytes;
};

// Workspace needed by a step of `params` with logits of `element_bytes`
// (4 or 2) on `device`.
WorkspaceSize blend_step_workspace(const StepParams& params, int element_bytes, int device);

// One step for every row of `params` (validated by the caller; per-row
// values that live on the device are range-checked by the kernel, which
// turns an out-of-range row into a bad row). T is float, Float16Bits or
// BFloat16Bits. Launches exactly one kernel on `stream` (none when the batch
// is empty) and returns the launch status; never synchronises.
template <typename T>
cudaError_t launch_blend_step(const T* base_logits, const T* guide_logits,
                              const StepParams& params, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream);

}  // namespace blendin::cuda
