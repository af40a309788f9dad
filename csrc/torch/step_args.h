// Torch glue shared by the CPU and CUDA implementations of
// blendin_ext::blend_step: argument checks (errors name the argument), output
// allocation, and the translation of tensors into the kernels' StepParams.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <tuple>

#include "blendin/step_params.h"

namespace blendin::torch_glue {

using StepResult =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The op's arguments as the schema in torch_bindings.cpp lists them. Every
// per-row parameter comes as an optional tensor (numel 1 or B) plus a scalar
// used when the tensor is absent.
struct StepInputs {
  const at::Tensor& base_logits;                   // (B, V) fp32 / fp16 / bf16
  const at::Tensor& guide_logits;                  // (B, Vg) same dtype and device
  const c10::optional<at::Tensor>& guide_to_base;  // (Vg,) int32 / int64
  const c10::optional<at::Tensor>& base_to_guide;  // (V,) int32, inverse map
  const c10::optional<at::Tensor>& gamma_tensor;   // (B,) float32
  double gamma_value;
  const c10::optional<at::Tensor>& alpha_tensor;  // (B,) float32, < 0: auto
  double alpha_value;                             // < 0: auto
  double agree_bonus;
  const c10::optional<at::Tensor>& temperature_tensor;  // (B,) float32
  double temperature_value;
  const c10::optional<at::Tensor>& top_k_tensor;  // (B,) int32, 0: off
  int64_t top_k_value;
  const c10::optional<at::Tensor>& top_p_tensor;  // (B,) float32, 1: off
  double top_p_value;
  const c10::optional<at::Tensor>& seed_tensor;  // (1,) or (B,) int64
  int64_t seed_value;
  const c10::optional<at::Tensor>& offset_tensor;  // (1,) or (B,) int64
  int64_t offset_value;
};

struct StepOutputTensors {
  at::Tensor tokens, intervened, alpha, base_top_prob, guide_top_prob, agree;
  at::Tensor seed_rows;  // an expanded (B,) seed made contiguous, alive until the launch
  StepResult as_tuple() const {
    return {tokens, intervened, alpha, base_top_prob, guide_top_prob, agree};
  }
};

// Checks every argument (raising c10::Error that names it), allocates the
// outputs on the logits' device and describes the step for a kernel.
// Values of per-row tensors are checked here only when they live on the CPU;
// on a GPU the kernel turns an out-of-range row into a bad row (no sync).
StepParams describe_step(const StepInputs& in, StepOutputTensors& out);

}  // namespace blendin::torch_glue
