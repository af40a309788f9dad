// Reading fp32 / fp16 / bf16 logits as float on the CPU without torch.
// 16-bit rows are widened one chunk at a time into a small staging buffer
// that stays in cache; float rows are read in place.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "blendin/step_params.h"
#include "cpu_variant.h"

namespace blendin::cpu {
inline namespace BLENDIN_CPU_VARIANT {  // see cpu_variant.h

inline float to_float(float x) { return x; }

inline float to_float(BFloat16Bits x) {
  const uint32_t bits = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline float to_float(Float16Bits x) {
#if defined(__F16C__)
  return _cvtsh_ss(x.bits);
#else
  const uint32_t h = x.bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1fu) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf / NaN
  } else if (exponent == 0) {
    const float magnitude = static_cast<float>(mantissa) * (1.0f / 16777216.0f);
    return sign ? -magnitude : magnitude;  // zero or subnormal
  } else {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
#endif
}

// Returns a float view of src[0, n): src itself for float, else `staging`
// filled with the widened values.
inline const float* as_floats(const float* src, int64_t /*n*/, float* /*staging*/) { return src; }

inline const float* as_floats(const BFloat16Bits* src, int64_t n, float* staging) {
  for (int64_t i = 0; i < n; ++i) staging[i] = to_float(src[i]);
  return staging;
}

inline const float* as_floats(const Float16Bits* src, int64_t n, float* staging) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(staging + i, _mm256_cvtph_ps(h));
  }
#endif
  for (; i < n; ++i) staging[i] = to_float(src[i]);
  return staging;
}

}  // namespace BLENDIN_CPU_VARIANT
}  // namespace blendin::cpu
