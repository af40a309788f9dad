// Launcher of the CUDA BlendIn step: plans the grid for the current device,
// checks the workspace and launches the kernel of blend_step_kernel.cuh with
// the logits reinterpreted as CUDA's own 16-bit types.
#include "blend_step_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>

#include "blend_step_kernel.cuh"
#include "launch_plan.h"

namespace blendin::cuda {
namespace {

constexpr int kMaxDevices = 64;

// Multiprocessor count of a device, looked up once.
cudaError_t sm_count(int device, int* count) {
  static std::atomic<int> cache[kMaxDevices];
  if (device >= 0 && device < kMaxDevices) {
    const int cached = cache[device].load(std::memory_order_relaxed);
    if (cached > 0) {
      *count = cached;
      return cudaSuccess;
    }
  }
  const cudaError_t err = cudaDeviceGetAttribute(count, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess && device >= 0 && device < kMaxDevices) {
    cache[device].store(*count, std::memory_order_relaxed);
  }
  return err;
}

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

}  // namespace

WorkspaceSize blend_step_workspace(const StepParams& params, int element_bytes, int device) {
  int sms = 0;
  if (sm_count(device, &sms) != cudaSuccess) sms = 1;
  const LaunchPlan plan = make_launch_plan(params.batch, params.vocab, params.guide_vocab,
                                           element_bytes, sms);
  return WorkspaceSize{plan.ticket_bytes, plan.workspace_bytes};
}

template <typename T>
cudaError_t launch_blend_step(const T* base_logits, const T* guide_logits,
                              const StepParams& params, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
  static_assert(sizeof(T) == sizeof(typename DeviceType<T>::type), "logit storage size");
  if (params.batch == 0) return cudaSuccess;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  int sms = 0;
  err = sm_count(device, &sms);
  if (err != cudaSuccess) return err;
  const LaunchPlan plan = make_launch_plan(params.batch, params.vocab, params.guide_vocab,
                                           static_cast<int>(sizeof(T)), sms);
  if (workspace == nullptr || workspace_bytes < plan.workspace_bytes ||
      reinterpret_cast<uintptr_t>(workspace) % 16 != 0 || plan.blocks > INT32_MAX) {
    return cudaErrorInvalidValue;
  }
  char* ws = static_cast<char*>(workspace);
  const KernelArgs args{plan.slice_elems, plan.base_slices, plan.guide_slices,
                        reinterpret_cast<unsigned int*>(ws),
                        reinterpret_cast<SlicePartial*>(ws + plan.partial_offset)};
  using D = typename DeviceType<T>::type;
  blend_step_kernel<D><<<static_cast<unsigned int>(plan.blocks), kThreads, 0, stream>>>(
      reinterpret_cast<const D*>(base_logits), reinterpret_cast<const D*>(guide_logits), params,
      args);
  return cudaGetLastError();
}

template cudaError_t launch_blend_step<float>(const float*, const float*, const StepParams&,
                                              void*, size_t, cudaStream_t);
template cudaError_t launch_blend_step<Float16Bits>(const Float16Bits*, const Float16Bits*,
                                                    const StepParams&, void*, size_t,
                                                    cudaStream_t);
template cudaError_t launch_blend_step<BFloat16Bits>(const BFloat16Bits*, const BFloat16Bits*,
                                                     const StepParams&, void*, size_t,
                                                     cudaStream_t);

}  // namespace blendin::cuda
