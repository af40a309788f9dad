// CUDA implementation of blendin_ext::blend_step: device guard, the current
// stream, cached per-stream buffers, and the torch-free launcher of
// csrc/cuda. Nothing here synchronises with the device on the hot path.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>

#include "../cuda/blend_step_cuda.h"
#include "step_op.h"

namespace blendin::torch_glue {
namespace {

void check_cuda(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "blend_step: ", what, " failed: ", cudaGetErrorString(err));
}

// Allows cudaMalloc and a private-stream memset while some stream is being
// captured into a CUDA graph (neither is part of the graph).
class RelaxedCaptureMode {
 public:
  RelaxedCaptureMode() { cudaThreadExchangeStreamCaptureMode(&mode_); }
  ~RelaxedCaptureMode() { cudaThreadExchangeStreamCaptureMode(&mode_); }
  RelaxedCaptureMode(const RelaxedCaptureMode&) = delete;
  RelaxedCaptureMode& operator=(const RelaxedCaptureMode&) = delete;

 private:
  cudaStreamCaptureMode mode_ = cudaStreamCaptureModeRelaxed;
};

// The buffers of the steps launched on one (device, stream). The tickets
// are zeroed once and kept zero by the kernel; the scratch needs no
// initialisation. Both only grow, and a replaced buffer is never freed: a
// CUDA graph captured earlier keeps using it.
struct StreamBuffers {
  unsigned int* tickets = nullptr;
  int64_t ticket_count = 0;
  void* scratch = nullptr;
  size_t scratch_bytes = 0;
};

class BufferCache {
 public:
  StreamBuffers get(int device, cudaStream_t stream, const cuda::WorkspaceSize& need) {
    std::lock_guard<std::mutex> lock(mutex_);
    StreamBuffers& buffers = entries_[{device, stream}];
    if (buffers.ticket_count < need.tickets) {
      const int64_t count = std::max<int64_t>({need.tickets, 2 * buffers.ticket_count, 1024});
      buffers.tickets = static_cast<unsigned int*>(allocate(count * sizeof(unsigned int)));
      zero(buffers.tickets, count * sizeof(unsigned int), stream);
      buffers.ticket_count = count;
    }
    if (buffers.scratch_bytes < need.scratch_bytes) {
      const size_t bytes =
          std::max<size_t>({need.scratch_bytes, 2 * buffers.scratch_bytes, size_t{256} << 10});
      buffers.scratch = allocate(bytes);
      buffers.scratch_bytes = bytes;
    }
    return buffers;
  }

 private:
  static void* allocate(size_t bytes) {
    const RelaxedCaptureMode relaxed;
    void* p = nullptr;
    check_cuda(cudaMalloc(&p, bytes), "cudaMalloc of the step's buffers");
    return p;
  }

  // Ordered before the step on `stream`; while `stream` is being captured a
  // memset there would only run at replay, so the tickets are zeroed now on
  // a private stream instead (once per buffer, with a wait).
  static void zero(void* p, size_t bytes, cudaStream_t stream) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    check_cuda(cudaStreamIsCapturing(stream, &status), "cudaStreamIsCapturing");
    if (status == cudaStreamCaptureStatusNone) {
      check_cuda(cudaMemsetAsync(p, 0, bytes, stream), "zeroing the tickets");
      return;
    }
    const RelaxedCaptureMode relaxed;
    cudaStream_t side = nullptr;
    check_cuda(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking), "cudaStreamCreate");
    const cudaError_t err = cudaMemsetAsync(p, 0, bytes, side);
    const cudaError_t sync = cudaStreamSynchronize(side);
    cudaStreamDestroy(side);
    check_cuda(err, "zeroing the tickets");
    check_cuda(sync, "zeroing the tickets");
  }

  std::mutex mutex_;
  std::map<std::pair<int, cudaStream_t>, StreamBuffers> entries_;
};

BufferCache& buffer_cache() {
  static BufferCache* cache = new BufferCache();  // never destroyed: outlives every stream
  return *cache;
}

template <typename T>
cudaError_t launch_typed(const void* base, const void* guide, const StepParams& params,
                         cuda::KernelVariant variant, int device, cudaStream_t stream) {
  const StreamBuffers buf =
      buffer_cache().get(device, stream, cuda::blend_step_workspace<T>(params, device, variant));
  return cuda::launch_blend_step(static_cast<const T*>(base), static_cast<const T*>(guide), params,
                                 variant, buf.tickets, buf.ticket_count, buf.scratch,
                                 buf.scratch_bytes, stream);
}

cuda::KernelVariant current_variant() {
  const int slot = cuda::kernel_variant_slot().load();
  TORCH_CHECK(slot >= 0,
              "blend_step: BLENDIN_CUDA_KERNEL names no CUDA kernel variant "
              "(torch.ops.blendin_ext.cuda_kernel_variants() lists them)");
  return static_cast<cuda::KernelVariant>(slot);
}

struct CudaBackend {
  static void launch(at::ScalarType dtype, const void* base, const void* guide,
                     const StepParams& params, const at::Device& device) {
    const c10::cuda::CUDAGuard guard(device);
    const int index = device.index();
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(index).stream();
    const cuda::KernelVariant variant = current_variant();  // read once: workspace and launch agree
    cudaError_t err = cudaErrorInvalidValue;
    switch (dtype) {
      case at::kFloat:
        err = launch_typed<float>(base, guide, params, variant, index, stream);
        break;
      case at::kHalf:
        err = launch_typed<Float16Bits>(base, guide, params, variant, index, stream);
        break;
      case at::kBFloat16:
        err = launch_typed<BFloat16Bits>(base, guide, params, variant, index, stream);
        break;
      default:
        TORCH_CHECK(false, "blend_step: unsupported logits dtype ", dtype);
    }
    check_cuda(err, "kernel launch");
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(blendin_ext, CUDA, m) { m.impl("blend_step", &blend_step_op<CudaBackend>); }

}  // namespace blendin::torch_glue
