// CPU implementation of blendin_ext::bf16_linear: argument checks, then
// torch's thread pool drives the torch-free kernel (csrc/cpu/bf16_linear.h).
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "../cpu/bf16_linear.h"

namespace blendin::torch_glue {
namespace {

void check_packed(const at::Tensor& packed, int64_t in_features, int64_t out_features) {
  TORCH_CHECK(packed.device().is_cpu() && packed.scalar_type() == at::kBFloat16,
              "bf16_linear: packed_weight must be a bfloat16 CPU tensor, got ",
              packed.scalar_type(), " on ", packed.device());
  TORCH_CHECK(packed.dim() == 4 && packed.size(2) == cpu::kLinearBlockCols && packed.size(3) == 2,
              "bf16_linear: packed_weight must have shape (blocks, input pairs, ",
              cpu::kLinearBlockCols, ", 2) (blendin_ext.models.bf16_linear.pack_bf16_weight), got ",
              packed.sizes());
  TORCH_CHECK(packed.is_contiguous(), "bf16_linear: packed_weight must be contiguous");
  TORCH_CHECK(packed.size(1) == cpu::linear_pairs(in_features), "bf16_linear: packed_weight holds ",
              packed.size(1), " input pairs, x has ", in_features, " features (",
              cpu::linear_pairs(in_features), " pairs)");
  TORCH_CHECK(out_features >= 0 && packed.size(0) == cpu::linear_blocks(out_features),
              "bf16_linear: out_features ", out_features, " does not fit packed_weight's ",
              packed.size(0), " blocks of ", cpu::kLinearBlockCols, " columns");
}

void check_bias(const std::optional<at::Tensor>& bias, int64_t out_features) {
  if (!bias.has_value()) return;
  TORCH_CHECK(bias->device().is_cpu() && bias->scalar_type() == at::kBFloat16,
              "bf16_linear: bias must be a bfloat16 CPU tensor, got ", bias->scalar_type(), " on ",
              bias->device());
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == out_features,
              "bf16_linear: bias must have shape (", out_features, ",), got ", bias->sizes());
}

int64_t rows_of(const at::Tensor& x) {  // every dimension but the last
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);
  return rows;
}

// y = x W^T + bias; kernel_name "auto" is the best this CPU runs.
at::Tensor bf16_linear_op(const at::Tensor& x, const at::Tensor& packed_weight,
                          const std::optional<at::Tensor>& bias, int64_t out_features,
                          c10::string_view kernel_name) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kBFloat16,
              "bf16_linear: x must be a bfloat16 CPU tensor, got ", x.scalar_type(), " on ",
              x.device());
  TORCH_CHECK(x.dim() >= 1, "bf16_linear: x must have at least one dimension");
  const int64_t in_features = x.size(-1);
  check_packed(packed_weight, in_features, out_features);
  check_bias(bias, out_features);
  const at::Tensor rows = x.contiguous();
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = out_features;
  at::Tensor y = at::empty(shape, x.options());
  std::optional<at::Tensor> bias_c;
  if (bias.has_value()) bias_c = bias->contiguous();
  const cpu::LinearArgs args{
      reinterpret_cast<const BFloat16Bits*>(rows.const_data_ptr<at::BFloat16>()),
      reinterpret_cast<const BFloat16Bits*>(packed_weight.const_data_ptr<at::BFloat16>()),
      bias_c ? reinterpret_cast<const BFloat16Bits*>(bias_c->const_data_ptr<at::BFloat16>())
             : nullptr,
      reinterpret_cast<BFloat16Bits*>(y.mutable_data_ptr<at::BFloat16>()),
      rows_of(x),
      in_features,
      out_features};
  const cpu::ParallelFor parallel_for = [](int64_t n, int64_t grain,
                                           const std::function<void(int64_t, int64_t)>& body) {
    at::parallel_for(0, n, grain, body);
  };
  try {
    if (kernel_name == "auto") {
      cpu::bf16_linear(args, parallel_for);
    } else {
      cpu::bf16_linear_with(std::string(kernel_name), args, parallel_for);
    }
  } catch (const std::runtime_error& e) {
    TORCH_CHECK(false, e.what());
  }
  return y;
}

std::vector<std::string> bf16_linear_kernels_op() { return cpu::bf16_linear_kernels(); }

}  // namespace

TORCH_LIBRARY_IMPL(blendin_ext, CPU, m) { m.impl("bf16_linear", &bf16_linear_op); }

TORCH_LIBRARY_IMPL(blendin_ext, CompositeExplicitAutograd, m) {
  m.impl("bf16_linear_kernels", &bf16_linear_kernels_op);
}

}  // namespace blendin::torch_glue
