// Unit tests of the torch-free core (shared math + CPU kernel), run by ctest.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "blend_step_cpu.h"
#include "blendin/blend_math.h"
#include "blendin/philox.h"
#include "float_load.h"

namespace {

int failures = 0;

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                                   \
    }                                                                               \
  } while (0)

using namespace blendin;
const float kInf = std::numeric_limits<float>::infinity();

void test_philox_known_answers() {
  // Random123's published known-answer vectors.
  Philox4x32Out r = philox4x32_10(0, 0, 0, 0, 0, 0);
  CHECK(r.v[0] == 0x6627e8d5u && r.v[1] == 0xe169c58du && r.v[2] == 0xbc57ac4cu &&
        r.v[3] == 0x9b00dbd8u);
  r = philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  CHECK(r.v[0] == 0xd16cfe09u && r.v[1] == 0x94fdccebu && r.v[2] == 0x5001e420u &&
        r.v[3] == 0x24126ea1u);
  CHECK(unit_float(0xffffffffu) < 1.0f && unit_float(0) == 0.0f);
}

void test_fast_exp() {
  CHECK(fast_exp(0.0f) == 1.0f);
  CHECK(fast_exp(-kInf) == 0.0f);
  CHECK(fast_exp(-100.0f) == 0.0f);
  // Relative error: 1.6e-7 from the polynomial, plus |n| * 1.9e-9 from the
  // one-constant range reduction (largest at the bottom of the range).
  float worst = 0.0f, worst_above_20 = 0.0f;
  for (float x = -86.9f; x <= 0.0f; x += 0.0137f) {
    const double want = std::exp(static_cast<double>(x));
    const float error = static_cast<float>(std::fabs(fast_exp(x) - want) / want);
    worst = std::fmax(worst, error);
    if (x >= -20.0f) worst_above_20 = std::fmax(worst_above_20, error);
  }
  CHECK(worst < 4.5e-7f);
  CHECK(worst_above_20 < 2.2e-7f);
}

void test_half_conversions() {
  CHECK(cpu::to_float(BFloat16Bits{0x3f80}) == 1.0f);
  CHECK(cpu::to_float(BFloat16Bits{0xff80}) == -kInf);
  CHECK(cpu::to_float(Float16Bits{0x3c00}) == 1.0f);
  CHECK(cpu::to_float(Float16Bits{0xc000}) == -2.0f);
  CHECK(cpu::to_float(Float16Bits{0x0001}) == std::ldexp(1.0f, -24));  // subnormal
  CHECK(std::isnan(cpu::to_float(Float16Bits{0x7e00})));
}

void test_partials_merge_like_one_pass() {
  std::vector<float> x(1000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i) * 4.0f;
  SoftmaxPartial whole = empty_partial(), left = empty_partial(), right = empty_partial();
  float m = -kInf;
  for (float v : x) m = std::fmax(m, v);
  whole.max = m;
  whole.sum = 0;
  for (float v : x) whole.sum += std::exp(v - m);
  auto fill = [&](SoftmaxPartial& p, size_t lo, size_t hi) {
    p.max = -kInf;
    for (size_t i = lo; i < hi; ++i) {
      if (x[i] > p.max) {
        p.max = x[i];
        p.argmax = static_cast<int32_t>(i);
      }
    }
    p.sum = 0;
    for (size_t i = lo; i < hi; ++i) p.sum += std::exp(x[i] - p.max);
    p.sum_tempered = p.sum;
  };
  fill(left, 0, 300);
  fill(right, 300, 1000);
  SoftmaxPartial merged = empty_partial();
  merge_partial(merged, right, 1.0f);
  merge_partial(merged, left, 1.0f);
  CHECK(merged.max == m);
  CHECK(std::fabs(merged.sum - whole.sum) < 1e-4f * whole.sum);
  CHECK(x[merged.argmax] == m);
}

void test_topk_keeps_best_with_ties_to_smaller_id() {
  TopK list;
  topk_clear(list);
  for (int i = 0; i < 20; ++i) topk_insert(list, static_cast<float>(i % 5), 100 - i);
  CHECK(list.count == kTopK);
  CHECK(list.value[0] == 4.0f && list.id[0] == 81);  // ids 96, 91, 86, 81 hold 4
  CHECK(list.value[3] == 4.0f && list.id[3] == 96);
  CHECK(list.value[4] == 3.0f);
}

void test_decision_rule() {
  const Decision d = decide(0.5f, 0.7f, 0.3f, 0.6f, -1.0f, 0.1f);
  CHECK(d.intervened);
  CHECK(std::fabs(d.alpha - (0.7f / 1.2f + 0.03f)) < 1e-6f);
  CHECK(decide(0.5f, 0.7f, 0.3f, 0.4f, -1.0f, 0.1f).alpha == 0.0f);
  CHECK(decide(0.1f, 0.9f, 0.9f, 0.4f, -1.0f, 0.5f).alpha == 1.0f);  // clamped
  CHECK(decide(0.1f, 0.9f, 0.9f, 0.4f, 0.25f, 0.5f).alpha == 0.25f);
  CHECK(!row_params_valid(-1.0f, 0.5f, 0.0f, 0, 1.0f));
  CHECK(!row_params_valid(0.4f, NAN, 0.0f, 0, 1.0f));
  CHECK(row_params_valid(0.4f, -1.0f, 0.0f, 0, 1.0f));
}

struct Outputs {
  std::vector<int64_t> tokens;
  std::vector<uint8_t> intervened;
  std::vector<float> alpha, base_top, guide_top, agree;
  explicit Outputs(int64_t b)
      : tokens(b), intervened(b), alpha(b), base_top(b), guide_top(b), agree(b) {}
  StepOutputs view() {
    return StepOutputs{tokens.data(),    reinterpret_cast<bool*>(intervened.data()),
                       alpha.data(),     base_top.data(),
                       guide_top.data(), agree.data()};
  }
};

StepParams params_for(int64_t batch, int64_t vocab, Outputs& out) {
  StepParams p{};
  p.batch = batch;
  p.vocab = p.guide_vocab = p.base_row_stride = p.guide_row_stride = vocab;
  p.gamma = RowParam<float>{nullptr, 0.6f, 0};
  p.alpha = RowParam<float>{nullptr, -1.0f, 0};
  p.temperature = RowParam<float>{nullptr, 0.0f, 0};
  p.top_k = RowParam<int32_t>{nullptr, 0, 0};
  p.top_p = RowParam<float>{nullptr, 1.0f, 0};
  p.seed = RowParam<int64_t>{nullptr, 7, 0};
  p.offset = RowParam<int64_t>{nullptr, 0, 0};
  p.agree_bonus = 0.1f;
  p.out = out.view();
  return p;
}

void test_cpu_kernel_end_to_end() {
  // Row 0: the worked example of the README; row 1: NaN -> bad row.
  const float base[6] = {std::log(0.5f), std::log(0.3f), std::log(0.2f), 0.0f, NAN, 0.0f};
  const float guide[6] = {std::log(0.1f), std::log(0.7f), std::log(0.2f), 0.0f, 0.0f, 0.0f};
  Outputs out(2);
  StepParams p = params_for(2, 3, out);
  cpu::blend_step(base, guide, p, cpu::serial_for);
  const float alpha = 0.7f / 1.2f + 0.1f * 0.3f;
  CHECK(out.intervened[0] == 1);
  CHECK(std::fabs(out.alpha[0] - alpha) < 1e-5f);
  CHECK(std::fabs(out.agree[0] - 0.3f) < 1e-5f);
  CHECK(out.tokens[0] == 1);  // q = (0.47, 0.53, 0.2) for alpha ~ 0.61
  CHECK(out.tokens[1] == -1 && std::isnan(out.alpha[1]) && out.intervened[1] == 0);

  // Sampling is a function of (seed, offset, stream) only.
  p.temperature.value = 1.0f;
  cpu::blend_step(base, guide, p, cpu::serial_for);
  const int64_t first = out.tokens[0];
  cpu::blend_step(base, guide, p, cpu::serial_for);
  CHECK(out.tokens[0] == first && first >= 0 && first < 3);

  // A subnormal temperature is the limit T -> 0: the drawn component's top
  // token (0 for the base, 1 for the guide), never a bad row.
  for (const float tiny : {1e-40f, 1e-45f, 1e-30f}) {
    p.temperature.value = tiny;
    cpu::blend_step(base, guide, p, cpu::serial_for);
    CHECK(out.tokens[0] == 0 || out.tokens[0] == 1);
    CHECK(out.tokens[1] == -1);
  }
}

void test_inverse_temperature_saturates() {
  CHECK(inverse_temperature(0.0f) == 1.0f);
  CHECK(inverse_temperature(2.0f) == 0.5f);
  CHECK(inverse_temperature(1e-40f) == kMaxInverseTemperature);
  CHECK(inverse_temperature(std::numeric_limits<float>::denorm_min()) == kMaxInverseTemperature);
  CHECK(inverse_temperature(std::ldexp(1.0f, -100)) == kMaxInverseTemperature);
  CHECK(inverse_temperature(kInf) == 0.0f);
  CHECK(kMaxInverseTemperature == std::ldexp(1.0f, 100));
  CHECK(std::isfinite(kMaxInverseTemperature * 32.0f));  // the CUDA top-p bins scale it
}

// Deterministic logits as fp16 bits in about [-8, 8]: every `masked`-th
// entry -inf, and entry 3 of row `nan_row` NaN (a bad row).
std::vector<Float16Bits> half_logits(int64_t batch, int64_t vocab, uint32_t seed, int masked,
                                     int64_t nan_row) {
  std::vector<Float16Bits> out(batch * vocab);
  uint32_t state = seed;
  for (int64_t i = 0; i < batch * vocab; ++i) {
    state = state * 1664525u + 1013904223u;
    const uint16_t magnitude = static_cast<uint16_t>(0x2000 + (state >> 8) % 0x2800);
    out[i].bits = static_cast<uint16_t>(magnitude | ((state >> 31) << 15));
    if (masked > 0 && i % masked == 1) out[i].bits = 0xfc00;
  }
  if (nan_row >= 0 && nan_row < batch && vocab > 3) out[nan_row * vocab + 3].bits = 0x7e00;
  return out;
}

// The outputs of one step as raw bytes, to compare variants bit for bit.
template <typename T>
std::vector<unsigned char> step_bytes(const std::string& variant, const std::vector<T>& base,
                                      const std::vector<T>& guide, int64_t batch, int64_t vocab,
                                      float temperature, int32_t top_k, float top_p) {
  Outputs out(batch);
  StepParams p = params_for(batch, vocab, out);
  p.temperature.value = temperature;
  p.top_k.value = top_k;
  p.top_p.value = top_p;
  cpu::blend_step_variant(variant, base.data(), guide.data(), p, cpu::serial_for);
  std::vector<unsigned char> bytes;
  auto append = [&](const void* data, size_t n) {
    const auto* b = static_cast<const unsigned char*>(data);
    bytes.insert(bytes.end(), b, b + n);
  };
  append(out.tokens.data(), batch * sizeof(int64_t));
  append(out.intervened.data(), batch);
  for (const auto* v : {&out.alpha, &out.base_top, &out.guide_top, &out.agree}) {
    append(v->data(), batch * sizeof(float));
  }
  return bytes;
}

template <typename T>
void check_variants_agree(const std::vector<T>& base, const std::vector<T>& guide, int64_t batch,
                          int64_t vocab, const char* dtype) {
  const std::vector<std::string> variants = cpu::runnable_cpu_variants();
  const float settings[][3] = {
      {0.0f, 0, 1.0f}, {1.0f, 0, 1.0f}, {0.8f, 40, 1.0f}, {0.8f, 0, 0.9f}, {1.3f, 20, 0.5f}};
  for (const auto& s : settings) {
    const int32_t top_k = static_cast<int32_t>(s[1]);
    const auto want = step_bytes(variants[0], base, guide, batch, vocab, s[0], top_k, s[2]);
    for (size_t v = 1; v < variants.size(); ++v) {
      if (step_bytes(variants[v], base, guide, batch, vocab, s[0], top_k, s[2]) != want) {
        std::fprintf(stderr, "variant %s differs from %s: %s V=%lld T=%g top_k=%d top_p=%g\n",
                     variants[v].c_str(), variants[0].c_str(), dtype, static_cast<long long>(vocab),
                     s[0], top_k, s[2]);
        ++failures;
      }
    }
  }
}

void test_cpu_variants_agree() {
  const std::vector<std::string> variants = cpu::runnable_cpu_variants();
  CHECK(!variants.empty());
  CHECK(variants[0] == cpu::active_cpu_variant() || std::getenv("BLENDIN_CPU_VARIANT"));
  std::printf("CPU variants runnable here: ");
  for (const auto& v : variants) std::printf("%s ", v.c_str());
  std::printf("(active: %s)\n", cpu::active_cpu_variant().c_str());
  bool rejected = false;
  try {
    Outputs out(1);
    const float x[1] = {0.0f};
    cpu::blend_step_variant("no-such-variant", x, x, params_for(1, 1, out), cpu::serial_for);
  } catch (const std::runtime_error&) {
    rejected = true;
  }
  CHECK(rejected);

  const int64_t batch = 5;
  for (const int64_t vocab : {int64_t{1}, int64_t{7}, int64_t{4097}, int64_t{50257}}) {
    const auto base16 = half_logits(batch, vocab, 11, 13, 2);
    const auto guide16 = half_logits(batch, vocab, 29, 0, -1);
    std::vector<float> base32(base16.size()), guide32(guide16.size());
    std::vector<BFloat16Bits> base_bf(base16.size()), guide_bf(guide16.size());
    for (size_t i = 0; i < base16.size(); ++i) {
      base32[i] = cpu::to_float(base16[i]);
      guide32[i] = cpu::to_float(guide16[i]);
      uint32_t bits;
      std::memcpy(&bits, &base32[i], 4);
      base_bf[i].bits = static_cast<uint16_t>(bits >> 16);  // fp16 values fit in bf16's range
      std::memcpy(&bits, &guide32[i], 4);
      guide_bf[i].bits = static_cast<uint16_t>(bits >> 16);
    }
    check_variants_agree(base32, guide32, batch, vocab, "fp32");
    check_variants_agree(base16, guide16, batch, vocab, "fp16");
    check_variants_agree(base_bf, guide_bf, batch, vocab, "bf16");
  }
}

}  // namespace

int main() {
  test_philox_known_answers();
  test_fast_exp();
  test_half_conversions();
  test_partials_merge_like_one_pass();
  test_topk_keeps_best_with_ties_to_smaller_id();
  test_decision_rule();
  test_inverse_temperature_saturates();
  test_cpu_kernel_end_to_end();
  test_cpu_variants_agree();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all core tests passed\n");
  return 0;
}
