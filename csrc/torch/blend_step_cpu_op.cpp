// CPU implementation of blendin_ext::blend_step: torch's thread pool drives
// the torch-free kernel in csrc/cpu. Also the ops that name its CPU variant.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "../cpu/blend_step_cpu.h"
#include "step_op.h"

namespace blendin::torch_glue {
namespace {

// The active variant; the dispatcher's error (BLENDIN_CPU_VARIANT names one
// that cannot run here) becomes a c10::Error like any argument error.
std::string cpu_variant_op() {
  try {
    return cpu::active_cpu_variant();
  } catch (const std::runtime_error& e) {
    TORCH_CHECK(false, e.what());
  }
}

struct CpuBackend {
  static void launch(at::ScalarType dtype, const void* base, const void* guide,
                     const StepParams& params, const at::Device& /*device*/) {
    cpu_variant_op();  // raises a bad BLENDIN_CPU_VARIANT before any work
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

std::vector<std::string> cpu_variants_op() { return cpu::runnable_cpu_variants(); }

}  // namespace

TORCH_LIBRARY_IMPL(blendin_ext, CPU, m) { m.impl("blend_step", &blend_step_op<CpuBackend>); }

// No tensor arguments, so no backend to dispatch on.
TORCH_LIBRARY_IMPL(blendin_ext, CompositeExplicitAutograd, m) {
  m.impl("cpu_variant", &cpu_variant_op);
  m.impl("cpu_variants", &cpu_variants_op);
}

}  // namespace blendin::torch_glue
