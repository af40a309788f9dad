// Unit tests of the bfloat16 linear kernels (bf16_linear.h), run by ctest:
// every kernel this CPU runs against a float64 product, and the kernels
// against each other bit for bit, over odd and block-straddling shapes,
// with and without bias, in one piece and split over "threads".
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bf16_linear.h"
#include "float_load.h"  // to_float

namespace {

using blendin::BFloat16Bits;
using namespace blendin::cpu;

int failures = 0;

#define CHECK(cond, ...)                                                            \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                            \
      std::fprintf(stderr, "\n");                                                   \
      ++failures;                                                                   \
    }                                                                               \
  } while (0)

BFloat16Bits truncated(float f) {  // any bfloat16 will do as test data
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return BFloat16Bits{uint16_t(bits >> 16)};
}

struct Case {
  int64_t rows, in, out;
  bool bias;
};

// The packed layout of bf16_linear.h, written out index by index.
std::vector<BFloat16Bits> pack(const std::vector<BFloat16Bits>& w, int64_t out, int64_t in) {
  const int64_t pairs = linear_pairs(in);
  std::vector<BFloat16Bits> packed(linear_blocks(out) * pairs * kLinearBlockCols * 2,
                                   BFloat16Bits{0});
  for (int64_t n = 0; n < out; ++n)
    for (int64_t k = 0; k < in; ++k) {
      const int64_t b = n / kLinearBlockCols, j = n % kLinearBlockCols;
      packed[((b * pairs + k / 2) * kLinearBlockCols + j) * 2 + k % 2] = w[n * in + k];
    }
  return packed;
}

// Pieces of at most `grain` blocks, as a thread pool would hand them out.
void split_for(int64_t n, int64_t /*grain*/, const std::function<void(int64_t, int64_t)>& body) {
  for (int64_t begin = 0; begin < n; begin += 3) body(begin, std::min(n, begin + 3));
}

void test_case(const Case& c, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<BFloat16Bits> w(c.out * c.in), x(c.rows * c.in), bias(c.out);
  for (auto& v : w) v = truncated(normal(rng));
  for (auto& v : x) v = truncated(normal(rng));
  for (auto& v : bias) v = truncated(normal(rng));
  const std::vector<BFloat16Bits> packed = pack(w, c.out, c.in);
  std::vector<std::vector<BFloat16Bits>> outputs;
  for (const std::string& kernel : bf16_linear_kernels()) {
    for (const ParallelFor& pf : {ParallelFor(serial_for), ParallelFor(split_for)}) {
      std::vector<BFloat16Bits> y(c.rows * c.out, BFloat16Bits{0x7fc0});
      const LinearArgs args{
          x.data(), packed.data(), c.bias ? bias.data() : nullptr, y.data(), c.rows, c.in, c.out};
      bf16_linear_with(kernel, args, pf);
      for (int64_t r = 0; r < c.rows; ++r)
        for (int64_t n = 0; n < c.out; ++n) {
          double exact = c.bias ? to_float(bias[n]) : 0.0, scale = std::fabs(exact);
          for (int64_t k = 0; k < c.in; ++k) {
            exact += double(to_float(w[n * c.in + k])) * to_float(x[r * c.in + k]);
            scale += std::fabs(double(to_float(w[n * c.in + k])) * to_float(x[r * c.in + k]));
          }
          const double got = to_float(y[r * c.out + n]);
          // one bfloat16 rounding, plus float32 sums over `in` terms
          CHECK(std::fabs(got - exact) <= std::fabs(exact) * 0x1p-8 + scale * 1e-6 * c.in,
                "kernel %s rows %lld in %lld out %lld: y[%lld][%lld] = %g, exact %g",
                kernel.c_str(), (long long)c.rows, (long long)c.in, (long long)c.out, (long long)r,
                (long long)n, got, exact);
        }
      outputs.push_back(y);
    }
  }
  for (const auto& y : outputs)
    CHECK(
        y.empty() || std::memcmp(y.data(), outputs[0].data(), y.size() * sizeof(BFloat16Bits)) == 0,
        "kernels differ at rows %lld in %lld out %lld", (long long)c.rows, (long long)c.in,
        (long long)c.out);
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  const Case cases[] = {{1, 1, 1, false},   {1, 5, 7, true},      {3, 1, 65, true},
                        {6, 33, 100, true}, {7, 64, 130, false},  {8, 640, 256, false},
                        {13, 17, 64, true}, {1, 2048, 640, true}, {0, 8, 64, false},
                        {2, 0, 3, true}};
  for (const Case& c : cases) test_case(c, rng);
  std::printf("bf16_linear kernels:");
  for (const std::string& k : bf16_linear_kernels()) std::printf(" %s", k.c_str());
  std::printf("\n");
  try {
    std::vector<BFloat16Bits> none(1);
    bf16_linear_with("sse", LinearArgs{none.data(), none.data(), nullptr, none.data(), 1, 1, 1},
                     serial_for);
    CHECK(false, "an unknown kernel name must throw");
  } catch (const std::runtime_error&) {
  }
  if (failures) std::fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
