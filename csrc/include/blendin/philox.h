// Philox4x32-10 counter-based RNG (Salmon et al., SC'11), shared by the CPU
// and CUDA kernels so that the same (seed, offset, stream) yields the same
// uniforms on both. Torch-free: plain integer arithmetic only.
#pragma once

#include <cstdint>

#include "blendin/macros.h"

namespace blendin {

struct Philox4x32Out {
  uint32_t v[4];
};

namespace detail {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;  // sqrt(3) - 1

BLENDIN_HD void mul_hi_lo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
}

}  // namespace detail

// Ten rounds of Philox4x32 on a 128-bit counter with a 64-bit key.
BLENDIN_HD Philox4x32Out philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                       uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    detail::mul_hi_lo(detail::kPhiloxM0, c0, hi0, lo0);
    detail::mul_hi_lo(detail::kPhiloxM1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += detail::kPhiloxW0;
    k1 += detail::kPhiloxW1;
  }
  return Philox4x32Out{{c0, c1, c2, c3}};
}

// Top 24 bits of a word as a float in [0, 1): exactly representable, so the
// CPU, the GPU and the Python reference see the same value.
BLENDIN_HD float unit_float(uint32_t bits) {
  return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f);
}

// The two uniforms one decode step of one row consumes: `component` picks
// guide vs base (guide when component < alpha), `token` drives the
// inverse-CDF draw inside the chosen component.
struct RowUniforms {
  float component;
  float token;
};

// Counter layout: (offset_lo, offset_hi, stream, 0), key: (seed_lo, seed_hi).
// `stream` separates rows that share one seed; rows with their own seed use
// stream 0 so their draws do not depend on their position in the batch.
BLENDIN_HD RowUniforms row_uniforms(uint64_t seed, uint64_t offset, uint32_t stream) {
  const Philox4x32Out r =
      philox4x32_10(static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32), stream, 0u,
                    static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return RowUniforms{unit_float(r.v[0]), unit_float(r.v[1])};
}

}  // namespace blendin
