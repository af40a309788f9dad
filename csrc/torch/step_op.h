// The body of blendin_ext::blend_step, written once for every device. A
// Backend supplies `launch(dtype, base_ptr, guide_ptr, params, device)`,
// which picks the stream, dispatches on dtype and runs its kernel.
#pragma once

#include "step_args.h"

namespace blendin::torch_glue {

template <typename Backend>
StepResult blend_step_op(const at::Tensor& base_logits, const at::Tensor& guide_logits,
                         const c10::optional<at::Tensor>& guide_to_base,
                         const c10::optional<at::Tensor>& base_to_guide,
                         const c10::optional<at::Tensor>& gamma_tensor, double gamma_value,
                         const c10::optional<at::Tensor>& alpha_tensor, double alpha_value,
                         double agree_bonus, const c10::optional<at::Tensor>& temperature_tensor,
                         double temperature_value, const c10::optional<at::Tensor>& top_k_tensor,
                         int64_t top_k_value, const c10::optional<at::Tensor>& top_p_tensor,
                         double top_p_value, const c10::optional<at::Tensor>& seed_tensor,
                         int64_t seed_value, const c10::optional<at::Tensor>& offset_tensor,
                         int64_t offset_value) {
  const StepInputs in{base_logits,  guide_logits,       guide_to_base,     base_to_guide,
                      gamma_tensor, gamma_value,        alpha_tensor,      alpha_value,
                      agree_bonus,  temperature_tensor, temperature_value, top_k_tensor,
                      top_k_value,  top_p_tensor,       top_p_value,       seed_tensor,
                      seed_value,   offset_tensor,      offset_value};
  StepOutputTensors out;
  const StepParams params = describe_step(in, out);
  if (params.batch > 0) {
    Backend::launch(base_logits.scalar_type(), base_logits.data_ptr(), guide_logits.data_ptr(),
                    params, base_logits.device());
  }
  return out.as_tuple();
}

}  // namespace blendin::torch_glue
