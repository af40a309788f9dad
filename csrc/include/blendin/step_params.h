// Everything one BlendIn step needs, as raw pointers and sizes, so the CPU
// and CUDA kernels take the same torch-free description of the work.
#pragma once

#include <cstdint>

#include "blendin/blend_math.h"

namespace blendin {

// Storage tags for 16-bit logits; layout-compatible with at::Half,
// at::BFloat16, __half and __nv_bfloat16 (one uint16_t).
struct Float16Bits {
  uint16_t bits;
};
struct BFloat16Bits {
  uint16_t bits;
};

struct StepOutputs {
  int64_t* tokens;        // (B,) chosen base token, -1 for a bad row
  bool* intervened;       // (B,) c_b < gamma
  float* alpha;           // (B,) guide weight used; 0 where not intervened
  float* base_top_prob;   // (B,) c_b
  float* guide_top_prob;  // (B,) c_g
  float* agree;           // (B,) p_b(argmax of the mapped guide)
};

// Token-id maps between the two vocabularies. Both null: shared vocabulary.
// guide_to_base may be int32 or int64; base_to_guide (its inverse, -1 where
// a base token has no guide twin) is always int32 and built once by the
// Python layer.
struct VocabMap {
  const void* guide_to_base;
  bool guide_to_base_is_int64;
  const int32_t* base_to_guide;

  BLENDIN_HD bool present() const { return guide_to_base != nullptr; }
  BLENDIN_HD int64_t base_of(int64_t guide_id) const {
    if (!guide_to_base) return guide_id;
    return guide_to_base_is_int64 ? static_cast<const int64_t*>(guide_to_base)[guide_id]
                                  : static_cast<const int32_t*>(guide_to_base)[guide_id];
  }
  BLENDIN_HD int64_t guide_of(int64_t base_id) const {
    return base_to_guide ? base_to_guide[base_id] : base_id;
  }
};

struct StepParams {
  int64_t batch;
  int64_t vocab;             // V, base vocabulary
  int64_t guide_vocab;       // Vg
  int64_t base_row_stride;   // elements between rows of base logits
  int64_t guide_row_stride;  // elements between rows of guide logits
  VocabMap map;
  RowParam<float> gamma;
  RowParam<float> alpha;        // < 0: the "auto" reliability rule
  RowParam<float> temperature;  // 0: greedy
  RowParam<int32_t> top_k;      // <= 0: off
  RowParam<float> top_p;        // >= 1: off
  RowParam<int64_t> seed;
  RowParam<int64_t> offset;
  float agree_bonus;
  StepOutputs out;

  // Rows that share one seed draw from separate Philox streams (their row
  // index); a per-row seed makes a row's draws independent of its position.
  BLENDIN_HD uint32_t rng_stream(int64_t row) const {
    return (seed.data != nullptr && seed.stride != 0) ? 0u : static_cast<uint32_t>(row);
  }
};

}  // namespace blendin
