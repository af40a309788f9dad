// Host-side pieces shared by the three kernel instantiations: the SM count
// cache.
#include "blend_step_cuda.h"

#include <atomic>

namespace blendin::cuda {

constexpr int kMaxDevices = 64;

cudaError_t device_sm_count(int device, int* count) {
  static std::atomic<int> cache[kMaxDevices];
  const bool cacheable = device >= 0 && device < kMaxDevices;
  if (cacheable) {
    const int cached = cache[device].load(std::memory_order_relaxed);
    if (cached > 0) {
      *count = cached;
      return cudaSuccess;
    }
  }
  const cudaError_t err = cudaDeviceGetAttribute(count, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess && cacheable) cache[device].store(*count, std::memory_order_relaxed);
  return err;
}

}  // namespace blendin::cuda
