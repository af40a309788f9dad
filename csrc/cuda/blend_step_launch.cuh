// The launcher template behind launch_blend_step(): plans the grid of the
// chosen variant for the current device, checks the workspace and launches
// the kernel with the logits reinterpreted as CUDA's own 16-bit types. Each dtype is
// instantiated in its own .cu file so the three kernels compile in parallel.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>

#include "blend_step_cuda.h"
#include "blend_step_kernel.cuh"
#include "coop_kernel.cuh"
#include "coop_plan.h"
#include "launch_plan.h"

namespace blendin::cuda {

// Multiprocessor count of a device, looked up once (blend_step_cuda.cu).
cudaError_t device_sm_count(int device, int* count);
constexpr int kMaxCachedDevices = 64;

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

// Blocks of the cooperative kernel for T that `device` runs at once (SMs x
// occupancy), looked up once per device.
template <typename D>
cudaError_t coop_resident_blocks(int device, int64_t* resident) {
  static std::atomic<int> cache[kMaxCachedDevices];
  const bool cacheable = device >= 0 && device < kMaxCachedDevices;
  int per_sm = cacheable ? cache[device].load(std::memory_order_relaxed) : 0;
  if (per_sm <= 0) {
    cudaError_t err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, blend_step_coop_kernel<D>, kThreads, 0);
    if (err != cudaSuccess) return err;
    if (cacheable) cache[device].store(per_sm, std::memory_order_relaxed);
  }
  int sms = 0;
  const cudaError_t err = device_sm_count(device, &sms);
  if (err != cudaSuccess) return err;
  *resident = static_cast<int64_t>(per_sm) * sms;
  return cudaSuccess;
}

// The plans of a step: the cooperative one when `variant` asks for it and
// the grid holds it, else the last_block one.
struct StepPlans {
  bool cooperative = false;
  CoopPlan coop;
  LaunchPlan last_block;
};

template <typename T>
cudaError_t plan_step(const StepParams& params, int device, KernelVariant variant,
                      StepPlans* plans) {
  using D = typename DeviceType<T>::type;
  int sms = 0;
  cudaError_t err = device_sm_count(device, &sms);
  if (err != cudaSuccess) return err;
  if (variant == KernelVariant::kCooperative) {
    int64_t resident = 0;
    err = coop_resident_blocks<D>(device, &resident);
    if (err != cudaSuccess) return err;
    plans->coop = make_coop_plan(params.batch, params.vocab, params.guide_vocab,
                                 static_cast<int>(sizeof(T)), resident);
    plans->cooperative = plans->coop.blocks > 0;
  }
  if (!plans->cooperative) {
    plans->last_block = make_launch_plan(params.batch, params.vocab, params.guide_vocab,
                                         static_cast<int>(sizeof(T)), sms);
  }
  return cudaSuccess;
}

template <typename T>
WorkspaceSize blend_step_workspace(const StepParams& params, int device, KernelVariant variant) {
  StepPlans plans;
  if (plan_step<T>(params, device, variant, &plans) != cudaSuccess) return WorkspaceSize{1, 16};
  if (plans.cooperative) return WorkspaceSize{plans.coop.tickets, plans.coop.scratch_bytes};
  return WorkspaceSize{plans.last_block.tickets, plans.last_block.scratch_bytes};
}

template <typename D>
cudaError_t launch_cooperative(const D* base, const D* guide, const StepParams& params,
                               const CoopPlan& plan, unsigned int* tickets, char* scratch,
                               cudaStream_t stream) {
  const CoopArgs args{plan.team,
                      plan.lanes,
                      plan.base_subblocks,
                      plan.guide_subblocks,
                      plan.member_subblocks,
                      tickets,
                      reinterpret_cast<SlicePartial*>(scratch + plan.partial_offset),
                      reinterpret_cast<CoopDecision*>(scratch + plan.decision_offset),
                      reinterpret_cast<MixtureArgmax*>(scratch + plan.mixture_offset),
                      reinterpret_cast<float*>(scratch + plan.subblock_offset),
                      reinterpret_cast<unsigned long long*>(scratch + plan.kept_offset),
                      reinterpret_cast<unsigned long long*>(scratch + plan.gather_offset)};
  cudaLaunchAttribute attribute;
  attribute.id = cudaLaunchAttributeCooperative;  // resident at once, or refused
  attribute.val.cooperative = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned int>(plan.blocks));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, blend_step_coop_kernel<D>, base, guide, params, args);
}

template <typename T>
cudaError_t launch_blend_step(const T* base_logits, const T* guide_logits, const StepParams& params,
                              KernelVariant variant, unsigned int* tickets, int64_t ticket_count,
                              void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  using D = typename DeviceType<T>::type;
  static_assert(sizeof(T) == sizeof(D), "logit storage size");
  if (params.batch == 0) return cudaSuccess;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  StepPlans plans;
  err = plan_step<T>(params, device, variant, &plans);
  if (err != cudaSuccess) return err;
  const int64_t need_tickets = plans.cooperative ? plans.coop.tickets : plans.last_block.tickets;
  const size_t need_scratch =
      plans.cooperative ? plans.coop.scratch_bytes : plans.last_block.scratch_bytes;
  const int64_t blocks = plans.cooperative ? plans.coop.blocks : plans.last_block.blocks;
  if (tickets == nullptr || ticket_count < need_tickets || scratch == nullptr ||
      scratch_bytes < need_scratch || reinterpret_cast<uintptr_t>(scratch) % 16 != 0 ||
      blocks > INT32_MAX) {
    return cudaErrorInvalidValue;
  }
  const D* base = reinterpret_cast<const D*>(base_logits);
  const D* guide = reinterpret_cast<const D*>(guide_logits);
  if (plans.cooperative) {
    return launch_cooperative(base, guide, params, plans.coop, tickets, static_cast<char*>(scratch),
                              stream);
  }
  const LaunchPlan& plan = plans.last_block;
  const KernelArgs args{plan.slice_elems, plan.base_slices, plan.guide_slices, tickets,
                        static_cast<SlicePartial*>(scratch)};
  blend_step_kernel<D>
      <<<static_cast<unsigned int>(plan.blocks), kThreads, 0, stream>>>(base, guide, params, args);
  return cudaGetLastError();
}

}  // namespace blendin::cuda
