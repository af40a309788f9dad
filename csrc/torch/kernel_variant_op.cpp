// The CUDA kernel variant in use (csrc/cuda/kernel_variant.h): listed, read
// and set through the dispatcher, in every build (a CPU-only build answers
// too, so benchmarks can ask before a GPU is there).
#include <torch/library.h>

#include <string>
#include <vector>

#include "../cuda/kernel_variant.h"

namespace blendin::torch_glue {
namespace {

std::vector<std::string> cuda_kernel_variants_op() {
  std::vector<std::string> names;
  for (int i = 0; i < cuda::kKernelVariantCount; ++i) {
    names.emplace_back(cuda::kernel_variant_name(static_cast<cuda::KernelVariant>(i)));
  }
  return names;
}

std::string known_variants() {
  std::string all;
  for (const std::string& name : cuda_kernel_variants_op()) all += (all.empty() ? "" : ", ") + name;
  return all;
}

std::string cuda_kernel_variant_op() {
  const int slot = cuda::kernel_variant_slot().load();
  TORCH_CHECK(slot >= 0, "BLENDIN_CUDA_KERNEL names no CUDA kernel variant; expected one of ",
              known_variants());
  return cuda::kernel_variant_name(static_cast<cuda::KernelVariant>(slot));
}

void set_cuda_kernel_variant_op(const std::string& name) {
  cuda::KernelVariant variant;
  TORCH_CHECK(cuda::kernel_variant_from_name(name.c_str(), &variant),
              "set_cuda_kernel_variant: name must be one of ", known_variants(), ", got '", name,
              "'");
  cuda::kernel_variant_slot().store(static_cast<int>(variant));
}

}  // namespace

// No tensor arguments, so no backend to dispatch on.
TORCH_LIBRARY_IMPL(blendin_ext, CompositeExplicitAutograd, m) {
  m.impl("cuda_kernel_variant", &cuda_kernel_variant_op);
  m.impl("cuda_kernel_variants", &cuda_kernel_variants_op);
  m.impl("set_cuda_kernel_variant", &set_cuda_kernel_variant_op);
}

}  // namespace blendin::torch_glue
