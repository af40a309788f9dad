#include "step_args.h"

#include <cmath>
#include <cstdio>
#include <string>

namespace blendin::torch_glue {
namespace {

void check_logits(const at::Tensor& t, const char* name) {
  // Expected: (B, V) with unit stride along the vocabulary.
  TORCH_CHECK(t.dim() == 2, name, " must be a 2-D (batch, vocab) tensor, got ", t.dim(),
              " dimensions");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kHalf ||
                  t.scalar_type() == at::kBFloat16,
              name, " must be float32, float16 or bfloat16, got ", t.scalar_type());
  TORCH_CHECK(t.size(1) >= 1, name, " must have a vocabulary of at least 1 token");
  TORCH_CHECK(t.size(1) < (int64_t{1} << 31), name, " has more than 2^31 - 1 tokens");
  TORCH_CHECK(t.size(0) == 0 || t.size(1) == 1 || t.stride(1) == 1, name,
              " must be contiguous along the vocabulary (stride(1) == 1), got stride ",
              t.stride(1));
  // Any row stride works, 0 included (expanded rows): logits are only read.
  // An empty batch has no element to read, whatever its strides.
}

void check_index_vector(const at::Tensor& t, const char* name, int64_t length,
                        const at::Device& device, bool allow_int64) {
  // Expected: (length,) int32 (or int64 where allowed), contiguous.
  TORCH_CHECK(t.dim() == 1 && t.size(0) == length, name, " must have shape (", length, ",), got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kInt || (allow_int64 && t.scalar_type() == at::kLong), name,
              allow_int64 ? " must be int32 or int64" : " must be int32", ", got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == device, name, " must be on ", device, " like base_logits, got ",
              t.device());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

VocabMap describe_map(const StepInputs& in, int64_t vocab, int64_t guide_vocab) {
  const at::Device device = in.base_logits.device();
  if (!in.guide_to_base.has_value()) {
    TORCH_CHECK(!in.base_to_guide.has_value(),
                "base_to_guide was given without guide_to_base; pass both or neither");
    TORCH_CHECK(guide_vocab == vocab, "guide_logits has ", guide_vocab,
                " tokens but base_logits has ", vocab,
                "; models with different vocabularies need guide_to_base");
    return VocabMap{nullptr, false, nullptr};
  }
  const at::Tensor& g2b = *in.guide_to_base;
  check_index_vector(g2b, "guide_to_base", guide_vocab, device, /*allow_int64=*/true);
  TORCH_CHECK(in.base_to_guide.has_value(),
              "base_to_guide (the inverse of guide_to_base, int32, -1 where a base token has "
              "no guide twin) is required with guide_to_base; blendin_ext.blend_step builds "
              "it for you");
  check_index_vector(*in.base_to_guide, "base_to_guide", vocab, device, /*allow_int64=*/false);
  if (device.is_cpu() && guide_vocab > 0) {
    const at::Tensor g2b64 = g2b.to(at::kLong);
    const int64_t lo = g2b64.min().item<int64_t>();
    const int64_t hi = g2b64.max().item<int64_t>();
    TORCH_CHECK(lo >= -1 && hi < vocab, "guide_to_base entries must lie in [-1, ", vocab,
                "), got values in [", lo, ", ", hi, "]");
  }
  return VocabMap{g2b.data_ptr(), g2b.scalar_type() == at::kLong,
                  in.base_to_guide->data_ptr<int32_t>()};
}

// A per-row parameter: the optional tensor (numel 1 or B) or the scalar.
template <typename T>
RowParam<T> describe_row_param(const c10::optional<at::Tensor>& tensor, T value, const char* name,
                               at::ScalarType dtype, int64_t batch, const at::Device& device) {
  if (!tensor.has_value()) return RowParam<T>{nullptr, value, 0};
  const at::Tensor& t = *tensor;
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() <= 1 && (t.numel() == 1 || t.numel() == batch), name,
              " must be a scalar tensor or have shape (", batch, ",), got ", t.sizes());
  TORCH_CHECK(t.device() == device, name, " must be on ", device, " like base_logits, got ",
              t.device());
  const int64_t stride = (t.numel() == 1 || t.dim() == 0) ? 0 : t.stride(0);
  return RowParam<T>{t.data_ptr<T>(), value, stride};
}

// All the digits of a double, so 1 + 1e-12 does not print as 1.
std::string exact(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.17g", value);
  return text;
}

// Range checks of the scalars as the schema passes them (double, int64),
// before any cast: float(-1e-50) is -0, float(1 + 1e-12) is 1 and
// int32(-(2^32) + 5) is 5, each of which would pass a check made after it.
void check_scalars(const StepInputs& in) {
  TORCH_CHECK(in.gamma_value >= 0, "gamma must be >= 0, got ", exact(in.gamma_value));
  TORCH_CHECK(in.alpha_value <= 1, "alpha must lie in [0, 1] (or be \"auto\"), got ",
              exact(in.alpha_value));
  TORCH_CHECK(in.temperature_value >= 0, "temperature must be >= 0, got ",
              exact(in.temperature_value));
  TORCH_CHECK(in.top_k_value >= 0, "top_k must be >= 0 (0 disables it), got ", in.top_k_value);
  TORCH_CHECK(in.top_k_value <= INT32_MAX, "top_k must fit in int32, got ", in.top_k_value);
  TORCH_CHECK(in.top_p_value > 0 && in.top_p_value <= 1, "top_p must lie in (0, 1], got ",
              exact(in.top_p_value));
  TORCH_CHECK(std::isfinite(in.agree_bonus), "agree_bonus must be finite, got ",
              exact(in.agree_bonus));
}

// A positive temperature stays positive in float32: one below 2^-100 (which
// float32 may round to 0, i.e. greedy over the mixture) becomes 2^-100, the
// value where inverse_temperature() saturates (blend_math.h).
float temperature_as_float(double t) {
  const double smallest = 1.0 / static_cast<double>(kMaxInverseTemperature);
  return static_cast<float>(t > 0 && t < smallest ? smallest : t);
}

// Range checks of per-row tensors the host can see without a sync.
void check_row_values(const StepInputs& in) {
  auto host_tensor = [](const c10::optional<at::Tensor>& t) {
    return t.has_value() && t->device().is_cpu() && t->numel() > 0;
  };
  if (host_tensor(in.gamma_tensor)) {
    TORCH_CHECK(in.gamma_tensor->ge(0).all().item<bool>(), "gamma must be >= 0 in every row");
  }
  if (host_tensor(in.alpha_tensor)) {
    TORCH_CHECK(in.alpha_tensor->le(1).all().item<bool>(),
                "alpha must lie in [0, 1] in every row (negative means auto)");
  }
  if (host_tensor(in.temperature_tensor)) {
    TORCH_CHECK(in.temperature_tensor->ge(0).all().item<bool>(),
                "temperature must be >= 0 in every row");
  }
  if (host_tensor(in.top_k_tensor)) {
    TORCH_CHECK(in.top_k_tensor->ge(0).all().item<bool>(), "top_k must be >= 0 in every row");
  }
  if (host_tensor(in.top_p_tensor)) {
    const at::Tensor& t = *in.top_p_tensor;
    TORCH_CHECK(t.gt(0).logical_and(t.le(1)).all().item<bool>(),
                "top_p must lie in (0, 1] in every row");
  }
}

}  // namespace

StepParams describe_step(const StepInputs& in, StepOutputTensors& out) {
  check_logits(in.base_logits, "base_logits");
  check_logits(in.guide_logits, "guide_logits");
  TORCH_CHECK(in.guide_logits.scalar_type() == in.base_logits.scalar_type(),
              "guide_logits must have the dtype of base_logits (", in.base_logits.scalar_type(),
              "), got ", in.guide_logits.scalar_type());
  TORCH_CHECK(in.guide_logits.device() == in.base_logits.device(),
              "guide_logits must be on the device of base_logits (", in.base_logits.device(),
              "), got ", in.guide_logits.device());
  const int64_t batch = in.base_logits.size(0);
  TORCH_CHECK(in.guide_logits.size(0) == batch, "guide_logits must have ", batch,
              " rows like base_logits, got ", in.guide_logits.size(0));
  const at::Device device = in.base_logits.device();
  check_scalars(in);

  StepParams p{};
  p.batch = batch;
  p.vocab = in.base_logits.size(1);
  p.guide_vocab = in.guide_logits.size(1);
  p.base_row_stride = in.base_logits.stride(0);
  p.guide_row_stride = in.guide_logits.stride(0);
  p.map = describe_map(in, p.vocab, p.guide_vocab);
  p.gamma = describe_row_param<float>(in.gamma_tensor, static_cast<float>(in.gamma_value), "gamma",
                                      at::kFloat, batch, device);
  p.alpha = describe_row_param<float>(in.alpha_tensor, static_cast<float>(in.alpha_value), "alpha",
                                      at::kFloat, batch, device);
  p.temperature =
      describe_row_param<float>(in.temperature_tensor, temperature_as_float(in.temperature_value),
                                "temperature", at::kFloat, batch, device);
  p.top_k = describe_row_param<int32_t>(in.top_k_tensor, static_cast<int32_t>(in.top_k_value),
                                        "top_k", at::kInt, batch, device);
  p.top_p = describe_row_param<float>(in.top_p_tensor, static_cast<float>(in.top_p_value), "top_p",
                                      at::kFloat, batch, device);
  p.seed =
      describe_row_param<int64_t>(in.seed_tensor, in.seed_value, "seed", at::kLong, batch, device);
  if (p.seed.data != nullptr && p.seed.stride == 0 && in.seed_tensor->numel() == batch &&
      batch > 1) {
    // A (B,) seed made with expand() is still one seed per row (stream 0);
    // the kernels tell per-row seeds by a non-zero stride, so give it one.
    out.seed_rows = in.seed_tensor->contiguous();
    p.seed = RowParam<int64_t>{out.seed_rows.data_ptr<int64_t>(), in.seed_value, 1};
  }
  p.offset = describe_row_param<int64_t>(in.offset_tensor, in.offset_value, "offset", at::kLong,
                                         batch, device);
  p.agree_bonus = static_cast<float>(in.agree_bonus);
  check_row_values(in);

  const auto f32 = in.base_logits.options().dtype(at::kFloat);
  out.tokens = at::empty({batch}, in.base_logits.options().dtype(at::kLong));
  out.intervened = at::empty({batch}, in.base_logits.options().dtype(at::kBool));
  out.alpha = at::empty({batch}, f32);
  out.base_top_prob = at::empty({batch}, f32);
  out.guide_top_prob = at::empty({batch}, f32);
  out.agree = at::empty({batch}, f32);
  p.out = StepOutputs{out.tokens.data_ptr<int64_t>(),       out.intervened.data_ptr<bool>(),
                      out.alpha.data_ptr<float>(),          out.base_top_prob.data_ptr<float>(),
                      out.guide_top_prob.data_ptr<float>(), out.agree.data_ptr<float>()};
  return p;
}

}  // namespace blendin::torch_glue
