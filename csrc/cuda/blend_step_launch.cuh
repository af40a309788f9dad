// The launcher template behind launch_blend_step(): plans the grid for the
// current device, checks the workspace and launches the kernel with the
// logits reinterpreted as CUDA's own 16-bit types. Each dtype is
// instantiated in its own .cu file so the three kernels compile in parallel.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "blend_step_cuda.h"
#include "blend_step_kernel.cuh"
#include "launch_plan.h"

namespace blendin::cuda {

// Multiprocessor count of a device, looked up once (blend_step_cuda.cu).
cudaError_t device_sm_count(int device, int* count);

template <typename T>
struct DeviceType;
template <>
struct DeviceType<float> {
  using type = float;
};
template <>
struct DeviceType<Float16Bits> {
  using type = __half;
};
template <>
struct DeviceType<BFloat16Bits> {
  using type = __nv_bfloat16;
};

template <typename T>
cudaError_t launch_blend_step(const T* base_logits, const T* guide_logits,
                              const StepParams& params, unsigned int* tickets,
                              int64_t ticket_count, void* scratch, size_t scratch_bytes,
                              cudaStream_t stream) {
  using D = typename DeviceType<T>::type;
  static_assert(sizeof(T) == sizeof(D), "logit storage size");
  if (params.batch == 0) return cudaSuccess;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  int sms = 0;
  err = device_sm_count(device, &sms);
  if (err != cudaSuccess) return err;
  const LaunchPlan plan = make_launch_plan(params.batch, params.vocab, params.guide_vocab,
                                           static_cast<int>(sizeof(T)), sms);
  if (tickets == nullptr || ticket_count < plan.tickets || scratch == nullptr ||
      scratch_bytes < plan.scratch_bytes || reinterpret_cast<uintptr_t>(scratch) % 16 != 0 ||
      plan.blocks > INT32_MAX) {
    return cudaErrorInvalidValue;
  }
  const KernelArgs args{plan.slice_elems, plan.base_slices, plan.guide_slices, tickets,
                        static_cast<SlicePartial*>(scratch)};
  blend_step_kernel<D><<<static_cast<unsigned int>(plan.blocks), kThreads, 0, stream>>>(
      reinterpret_cast<const D*>(base_logits), reinterpret_cast<const D*>(guide_logits), params,
      args);
  return cudaGetLastError();
}

}  // namespace blendin::cuda
