// CPU implementation of blendin_ext::blend_step: torch's thread pool drives
// the torch-free kernel in csrc/cpu.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../cpu/blend_step_cpu.h"
#include "step_op.h"

namespace blendin::torch_glue {
namespace {

struct CpuBackend {
  static void launch(at::ScalarType dtype, const void* base, const void* guide,
                     const StepParams& params, const at::Device& /*device*/) {
    const cpu::ParallelFor parallel_for = [](int64_t n, int64_t grain,
                                             const std::function<void(int64_t, int64_t)>& body) {
      at::parallel_for(0, n, grain, body);
    };
    switch (dtype) {
      case at::kFloat:
        cpu::blend_step(static_cast<const float*>(base), static_cast<const float*>(guide), params,
                        parallel_for);
        break;
      case at::kHalf:
        cpu::blend_step(static_cast<const Float16Bits*>(base),
                        static_cast<const Float16Bits*>(guide), params, parallel_for);
        break;
      case at::kBFloat16:
        cpu::blend_step(static_cast<const BFloat16Bits*>(base),
                        static_cast<const BFloat16Bits*>(guide), params, parallel_for);
        break;
      default:
        TORCH_CHECK(false, "blend_step: unsupported logits dtype ", dtype);
    }
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(blendin_ext, CPU, m) {
  m.impl("blend_step", &blend_step_op<CpuBackend>);
}

}  // namespace blendin::torch_glue
