// The one place where blendin_ext's operator schemas are declared. Device
// implementations register themselves beside their glue
// (blend_step_cpu_op.cpp, blend_step_cuda_op.cpp, bf16_linear_op.cpp).
#include <Python.h>
#include <torch/library.h>

// `import blendin_ext._C` loads this library, which runs the registrations
// below; the module itself exposes nothing.
extern "C" PyObject* PyInit__C(void) {
  // Every member spelled out (-Wextra warns about a missing initializer).
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(blendin_ext, m) {
  // One BlendIn decode step; semantics in blendin_ext/ops/README.md.
  // Per-row parameters: an optional (1,) or (B,) tensor, else the scalar.
  // alpha < 0 means "auto"; top_k 0 and top_p 1 disable those filters.
  m.def(
      "blend_step(Tensor base_logits, Tensor guide_logits, Tensor? guide_to_base, "
      "Tensor? base_to_guide, Tensor? gamma_tensor, float gamma_value, "
      "Tensor? alpha_tensor, float alpha_value, float agree_bonus, "
      "Tensor? temperature_tensor, float temperature_value, "
      "Tensor? top_k_tensor, int top_k_value, Tensor? top_p_tensor, float top_p_value, "
      "Tensor? seed_tensor, int seed_value, Tensor? offset_tensor, int offset_value) -> "
      "(Tensor tokens, Tensor intervened, Tensor alpha, Tensor base_top_prob, "
      "Tensor guide_top_prob, Tensor agree)");
  // The CPU kernel's variant in use (csrc/cpu/cpu_variant.h), and those this
  // CPU can run, best first. BLENDIN_CPU_VARIANT forces one (read once).
  m.def("cpu_variant() -> str");
  m.def("cpu_variants() -> str[]");
  // The CUDA kernel's variants (csrc/cuda/kernel_variant.h): the one in use,
  // all of them, and a process-wide switch (BLENDIN_CUDA_KERNEL sets the
  // first), for measuring them side by side.
  m.def("cuda_kernel_variant() -> str");
  m.def("cuda_kernel_variants() -> str[]");
  m.def("set_cuda_kernel_variant(str name) -> ()");
  // A bfloat16 linear layer for decoding: y = x W^T + bias with W in the
  // packed layout of csrc/cpu/bf16_linear.h (blendin_ext/models/bf16_linear.py
  // packs it). kernel_name: "auto" (the best this CPU runs) or one that
  // bf16_linear_kernels() lists, best first. (Not "kernel": inductor's
  // fallback for an opaque op takes a keyword of that name.)
  m.def(
      "bf16_linear(Tensor x, Tensor packed_weight, Tensor? bias, int out_features, "
      "str kernel_name=\"auto\") -> Tensor");
  m.def("bf16_linear_kernels() -> str[]");
}
