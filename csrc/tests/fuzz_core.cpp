// A small randomised driver of the torch-free core's entry points
// (cpu::blend_step_variant on every runnable variant): random shapes, row
// strides (0, tight, padded), dtypes, per-row parameter arrays (broadcast or
// per row, some out of range), vocabulary maps (some with out-of-range
// entries) and bad rows (NaN, +inf, all masked). It checks what holds for any
// input: bad rows get -1 and NaN statistics, good rows a drawable token and
// statistics in range, and every variant writes the same bytes. Run by ctest,
// also in the ASan/UBSan build (BLENDIN_SANITIZE), where every read and
// write of the kernel is checked too.
//
// usage: fuzz_core [cases] [seed]
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "blend_step_cpu.h"
#include "blendin/blend_math.h"
#include "float_load.h"

namespace {

using namespace blendin;
const float kInf = std::numeric_limits<float>::infinity();
int failures = 0;

#define EXPECT(cond, ...)                                          \
  do {                                                             \
    if (!(cond)) {                                                 \
      std::fprintf(stderr, "case %d row %lld: %s: ", current_case, \
                   static_cast<long long>(current_row), #cond);    \
      std::fprintf(stderr, __VA_ARGS__);                           \
      std::fprintf(stderr, "\n");                                  \
      ++failures;                                                  \
    }                                                              \
  } while (0)

int current_case = 0;
int64_t current_row = -1;
std::mt19937_64 rng;

int64_t uniform_int(int64_t lo, int64_t hi) {  // [lo, hi]
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}
bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }
float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng); }

// A ParallelFor that cuts the range into uneven pieces (serially), so chunk
// boundaries fall where a thread pool might put them.
void pieces_for(int64_t n, int64_t /*grain*/, const std::function<void(int64_t, int64_t)>& body) {
  int64_t begin = 0;
  while (begin < n) {
    const int64_t end = std::min(n, begin + uniform_int(1, 7));
    body(begin, end);
    begin = end;
  }
}

// Logits as float values that every dtype represents exactly (fp16 values).
float random_logit() {
  const double r = std::uniform_real_distribution<double>(0, 1)(rng);
  if (r < 0.02) return -kInf;
  const float x = std::ldexp(std::round(uniform(-1024, 1024)), -7);  // [-8, 8] in 1/128 steps
  return x;
}

template <typename T>
T store(float x);
template <>
float store<float>(float x) {
  return x;
}
template <>
BFloat16Bits store<BFloat16Bits>(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  return BFloat16Bits{static_cast<uint16_t>(bits >> 16)};  // values here have short mantissas
}
template <>
Float16Bits store<Float16Bits>(float x) {
  if (std::isnan(x)) return Float16Bits{0x7e00};
  if (std::isinf(x)) return Float16Bits{static_cast<uint16_t>(x > 0 ? 0x7c00 : 0xfc00)};
  if (x == 0.0f) return Float16Bits{static_cast<uint16_t>(std::signbit(x) ? 0x8000 : 0)};
  int exponent;
  const float mantissa = std::frexp(std::fabs(x), &exponent);  // x = m * 2^e, m in [0.5, 1)
  const uint16_t sign = x < 0 ? 0x8000 : 0;
  if (exponent - 1 < -14) {  // subnormal half: multiples of 2^-24
    const auto steps = static_cast<uint16_t>(std::fabs(x) * 16777216.0f);
    return Float16Bits{static_cast<uint16_t>(sign | steps)};
  }
  const uint16_t e = static_cast<uint16_t>(exponent - 1 + 15);
  const uint16_t m = static_cast<uint16_t>((mantissa * 2.0f - 1.0f) * 1024.0f);
  return Float16Bits{static_cast<uint16_t>(sign | (e << 10) | m)};
}

struct Case {
  int64_t batch, vocab, guide_vocab, base_stride, guide_stride;
  std::vector<float> base, guide;  // values as stored (strided layout)
  std::vector<int64_t> g2b;        // empty: no map
  std::vector<int32_t> b2g;
  bool map_out_of_range = false;
  std::vector<float> gamma, alpha, temperature, top_p;
  std::vector<int32_t> top_k;
  std::vector<int64_t> seed, offset;
  float agree_bonus;
};

// A row stride: 0 (one expanded row) when the batch allows, tight or padded.
int64_t random_stride(int64_t vocab, int64_t batch) {
  if (batch > 1 && chance(0.1)) return 0;
  return vocab + (chance(0.3) ? uniform_int(1, 9) : 0);
}

std::vector<float> random_rows(int64_t batch, int64_t vocab, int64_t stride) {
  const int64_t rows = stride == 0 ? 1 : batch;
  std::vector<float> data(std::max<int64_t>(1, (rows - 1) * stride + vocab), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = data.data() + r * stride;
    const double spike = chance(0.5) ? uniform(2, 12) : 0.0;
    for (int64_t j = 0; j < vocab; ++j) row[j] = random_logit();
    if (spike > 0) row[uniform_int(0, vocab - 1)] = static_cast<float>(spike);
    const double kind = std::uniform_real_distribution<double>(0, 1)(rng);
    if (kind < 0.02)
      row[uniform_int(0, vocab - 1)] = NAN;
    else if (kind < 0.035)
      row[uniform_int(0, vocab - 1)] = kInf;
    else if (kind < 0.05)
      for (int64_t j = 0; j < vocab; ++j) row[j] = -kInf;
  }
  return data;
}

// Per-row values: broadcast (one element) or one per row, a few out of range.
template <typename V, typename Gen>
std::vector<V> row_values(int64_t batch, Gen gen) {
  std::vector<V> v(chance(0.4) ? 1 : batch);
  for (auto& x : v) x = gen();
  return v;
}

Case random_case() {
  Case c;
  c.batch = uniform_int(1, 6);
  const int64_t sizes[] = {1, 2, 7, 255, 256, 257, 1000, 4095, 4096, 4097, 9000};
  c.vocab = chance(0.8) ? sizes[uniform_int(0, 10)] : uniform_int(1, 20000);
  const bool mapped = chance(0.5);
  c.guide_vocab = mapped ? std::max<int64_t>(1, c.vocab + uniform_int(-c.vocab / 2, 300)) : c.vocab;
  c.base_stride = random_stride(c.vocab, c.batch);
  c.guide_stride = random_stride(c.guide_vocab, c.batch);
  c.base = random_rows(c.batch, c.vocab, c.base_stride);
  c.guide = random_rows(c.batch, c.guide_vocab, c.guide_stride);
  if (mapped) {
    std::vector<int64_t> targets(c.vocab);
    for (int64_t i = 0; i < c.vocab; ++i) targets[i] = i;
    std::shuffle(targets.begin(), targets.end(), rng);
    c.g2b.assign(c.guide_vocab, -1);
    c.b2g.assign(c.vocab, -1);
    const double unmapped = uniform(0, 0.9);
    for (int64_t g = 0, t = 0; g < c.guide_vocab && t < c.vocab; ++g) {
      if (chance(unmapped)) continue;
      c.g2b[g] = targets[t];
      c.b2g[targets[t++]] = static_cast<int32_t>(g);
    }
    if (chance(0.03)) {  // what an unvalidated device map could hold
      c.g2b[uniform_int(0, c.guide_vocab - 1)] = chance(0.5) ? c.vocab + 3 : -2;
      c.map_out_of_range = true;
    }
  }
  c.gamma = row_values<float>(c.batch, [] { return chance(0.03) ? -0.5f : uniform(0, 1.2f); });
  c.alpha = row_values<float>(c.batch, [] {
    return chance(0.03) ? 1.5f : chance(0.4) ? -1.0f : uniform(0, 1);
  });
  c.temperature = row_values<float>(c.batch, [] {
    const float tiny[] = {1e-40f, 1e-45f, 1e-30f, 0.0f};
    return chance(0.4)    ? 0.0f
           : chance(0.1)  ? tiny[uniform_int(0, 3)]
           : chance(0.02) ? -1.0f
                          : uniform(0.05f, 3.0f);
  });
  c.top_k = row_values<int32_t>(c.batch, [&] {
    if (chance(0.5)) return 0;
    return static_cast<int32_t>(chance(0.02) ? -3 : uniform_int(1, c.vocab + 5));
  });
  c.top_p = row_values<float>(c.batch, [] {
    return chance(0.5) ? 1.0f : chance(0.02) ? 0.0f : uniform(0.01f, 1.0f);
  });
  c.seed = row_values<int64_t>(c.batch, [] { return static_cast<int64_t>(rng()); });
  c.offset = row_values<int64_t>(c.batch, [] { return static_cast<int64_t>(rng() % 1000); });
  c.agree_bonus = uniform(-0.5f, 0.5f);
  return c;
}

template <typename V>
RowParam<V> as_param(const std::vector<V>& v) {
  return RowParam<V>{v.data(), v[0], v.size() == 1 ? 0 : 1};
}

struct Outputs {
  std::vector<int64_t> tokens;
  std::vector<uint8_t> intervened;
  std::vector<float> alpha, base_top, guide_top, agree;
  explicit Outputs(int64_t b)
      : tokens(b, -7), intervened(b, 7), alpha(b), base_top(b), guide_top(b), agree(b) {}
  std::vector<unsigned char> bytes() const {
    std::vector<unsigned char> out;
    auto add = [&](const void* p, size_t n) {
      out.insert(out.end(), static_cast<const unsigned char*>(p),
                 static_cast<const unsigned char*>(p) + n);
    };
    add(tokens.data(), tokens.size() * 8);
    add(intervened.data(), intervened.size());
    for (const auto* v : {&alpha, &base_top, &guide_top, &agree}) add(v->data(), v->size() * 4);
    return out;
  }
};

// The row is bad exactly when the op's README says so.
bool expect_bad(const Case& c, int64_t r) {
  const float* b = c.base.data() + r * c.base_stride;
  const float* g = c.guide.data() + r * c.guide_stride;
  auto at = [r](const auto& v) { return v[v.size() == 1 ? 0 : r]; };
  if (!row_params_valid(at(c.gamma), at(c.alpha), at(c.temperature), at(c.top_k), at(c.top_p))) {
    return true;
  }
  if (c.map_out_of_range) return true;
  bool base_finite = false, guide_finite = false;
  for (int64_t j = 0; j < c.vocab; ++j) {
    if (std::isnan(b[j]) || b[j] == kInf) return true;
    base_finite |= b[j] > -kInf;
  }
  for (int64_t j = 0; j < c.guide_vocab; ++j) {
    if (std::isnan(g[j]) || g[j] == kInf) return true;
    guide_finite |= g[j] > -kInf && (c.g2b.empty() || c.g2b[j] >= 0);
  }
  return !base_finite || !guide_finite;
}

void check_row(const Case& c, const Outputs& out, int64_t r) {
  current_row = r;
  const float* b = c.base.data() + r * c.base_stride;
  const float* g = c.guide.data() + r * c.guide_stride;
  if (expect_bad(c, r)) {
    EXPECT(out.tokens[r] == -1, "token %lld", static_cast<long long>(out.tokens[r]));
    EXPECT(out.intervened[r] == 0 && std::isnan(out.alpha[r]) && std::isnan(out.base_top[r]) &&
               std::isnan(out.guide_top[r]) && std::isnan(out.agree[r]),
           "bad-row statistics");
    return;
  }
  const int64_t t = out.tokens[r];
  EXPECT(t >= 0 && t < c.vocab, "token %lld of V=%lld", static_cast<long long>(t),
         static_cast<long long>(c.vocab));
  if (t < 0 || t >= c.vocab) return;
  const int64_t twin = c.b2g.empty() ? t : c.b2g[t];
  const bool from_base = b[t] > -kInf;
  const bool from_guide = twin >= 0 && g[twin] > -kInf;
  EXPECT(from_base || from_guide, "token %lld is masked in both models", static_cast<long long>(t));
  EXPECT(out.base_top[r] > 0 && out.base_top[r] <= 1.0001f, "base_top %g", out.base_top[r]);
  EXPECT(out.guide_top[r] > 0 && out.guide_top[r] <= 1.0001f, "guide_top %g", out.guide_top[r]);
  EXPECT(out.agree[r] >= 0 && out.agree[r] <= 1.0001f, "agree %g", out.agree[r]);
  EXPECT(out.alpha[r] >= 0 && out.alpha[r] <= 1, "alpha %g", out.alpha[r]);
  const float gamma = c.gamma[c.gamma.size() == 1 ? 0 : r];
  EXPECT((out.intervened[r] != 0) == (out.base_top[r] < gamma), "intervened");
  if (out.alpha[r] == 0) EXPECT(from_base, "alpha 0 but the base masks the token");
  if (out.alpha[r] == 1) EXPECT(from_guide, "alpha 1 but the guide masks the token");
}

template <typename T>
void run_case(const Case& c, const std::vector<std::string>& variants) {
  std::vector<T> base(c.base.size()), guide(c.guide.size());
  for (size_t i = 0; i < base.size(); ++i) base[i] = store<T>(c.base[i]);
  for (size_t i = 0; i < guide.size(); ++i) guide[i] = store<T>(c.guide[i]);
  std::vector<unsigned char> first;
  for (const std::string& variant : variants) {
    Outputs out(c.batch);
    StepParams p{};
    p.batch = c.batch;
    p.vocab = c.vocab;
    p.guide_vocab = c.guide_vocab;
    p.base_row_stride = c.base_stride;
    p.guide_row_stride = c.guide_stride;
    p.map = c.g2b.empty() ? VocabMap{nullptr, false, nullptr}
                          : VocabMap{c.g2b.data(), true, c.b2g.data()};
    p.gamma = as_param(c.gamma);
    p.alpha = as_param(c.alpha);
    p.temperature = as_param(c.temperature);
    p.top_k = as_param(c.top_k);
    p.top_p = as_param(c.top_p);
    p.seed = as_param(c.seed);
    p.offset = as_param(c.offset);
    p.agree_bonus = c.agree_bonus;
    p.out = StepOutputs{out.tokens.data(),    reinterpret_cast<bool*>(out.intervened.data()),
                        out.alpha.data(),     out.base_top.data(),
                        out.guide_top.data(), out.agree.data()};
    const std::mt19937_64 saved = rng;  // same pieces for every variant
    cpu::blend_step_variant(variant, base.data(), guide.data(), p, pieces_for);
    rng = saved;
    for (int64_t r = 0; r < c.batch; ++r) check_row(c, out, r);
    current_row = -1;
    if (first.empty()) {
      first = out.bytes();
    } else {
      EXPECT(out.bytes() == first, "variant %s differs from %s", variant.c_str(),
             variants[0].c_str());
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int cases = argc > 1 ? std::atoi(argv[1]) : 300;
  const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 20261202u;
  rng.seed(seed);
  const std::vector<std::string> variants = cpu::runnable_cpu_variants();
  int bad_rows = 0, rows = 0;
  for (current_case = 0; current_case < cases; ++current_case) {
    const Case c = random_case();
    for (int64_t r = 0; r < c.batch; ++r) bad_rows += expect_bad(c, r);
    rows += static_cast<int>(c.batch);
    switch (current_case % 3) {
      case 0:
        run_case<float>(c, variants);
        break;
      case 1:
        run_case<Float16Bits>(c, variants);
        break;
      default:
        run_case<BFloat16Bits>(c, variants);
        break;
    }
    if (failures > 20) break;
  }
  std::printf("fuzz_core: %d cases, %d rows (%d bad), %zu variants, seed %llu: %d failure(s)\n",
              current_case, rows, bad_rows, variants.size(), static_cast<unsigned long long>(seed),
              failures);
  return failures ? 1 : 0;
}
