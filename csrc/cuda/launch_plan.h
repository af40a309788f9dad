// How one BlendIn step is cut into blocks, and where its workspace lies.
// Plain C++ (no CUDA headers) so the launcher, the workspace query and the
// emulator tests compute the very same plan.
//
// Grid: one block per (row, slice); a row's slices are its base slices
// followed by its guide slices, each a contiguous range of `slice_elems`
// logits. With few rows the vocabulary is cut finely so that the grid still
// fills the GPU; with many rows each model row is one or two slices.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "blendin/blend_math.h"

namespace blendin::cuda {

// Per-slice result of the statistics pass, written to the workspace by its
// block and merged by the last block of the row.
struct SlicePartial {
  SoftmaxPartial softmax;
  float top_value[kTopK];
  int32_t top_id[kTopK];
};

struct LaunchPlan {
  int64_t batch = 0;
  int64_t slice_elems = 0;   // logits per slice (a multiple of 16-byte vectors)
  int32_t base_slices = 0;   // slices per base row
  int32_t guide_slices = 0;  // slices per guide row
  int64_t blocks = 0;        // batch * (base_slices + guide_slices)
  int64_t tickets = 0;       // per-row arrival counters (zero between launches)
  size_t scratch_bytes = 0;  // the blocks' SlicePartials

  int32_t slices() const { return base_slices + guide_slices; }
};

constexpr int kPlanThreads = 256;        // must equal kThreads of the kernel
constexpr int kTargetBlocksPerSm = 4;    // grid size aimed at: SMs x this
constexpr int kMinVectorsPerThread = 2;  // smallest slice: 2 vector loads per thread
constexpr int kMaxSlicesPerModel = 512;  // bounds the finishing block's shared arrays

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// `min_slice_elems` (0: the default) lets tests force many tiny slices.
inline LaunchPlan make_launch_plan(int64_t batch, int64_t vocab, int64_t guide_vocab,
                                   int element_bytes, int num_sms, int64_t min_slice_elems = 0) {
  LaunchPlan plan;
  plan.batch = batch;
  const int64_t vec = 16 / element_bytes;
  const int64_t quantum = vec * kPlanThreads;  // one vector per thread
  if (min_slice_elems <= 0) min_slice_elems = quantum * kMinVectorsPerThread;
  min_slice_elems = ceil_div(min_slice_elems, vec) * vec;
  const int64_t target_blocks = static_cast<int64_t>(std::max(num_sms, 1)) * kTargetBlocksPerSm;
  const int64_t slices_wanted =
      std::max<int64_t>(1, ceil_div(target_blocks, std::max<int64_t>(batch, 1)));
  int64_t elems = ceil_div(vocab + guide_vocab, slices_wanted);
  elems = std::max(elems, min_slice_elems);
  elems = std::max(elems, ceil_div(std::max(vocab, guide_vocab), kMaxSlicesPerModel));
  elems = ceil_div(elems, vec) * vec;
  if (elems > quantum) elems = ceil_div(elems, quantum) * quantum;
  plan.slice_elems = elems;
  plan.base_slices = static_cast<int32_t>(ceil_div(vocab, elems));
  plan.guide_slices = static_cast<int32_t>(ceil_div(guide_vocab, elems));
  plan.blocks = batch * plan.slices();
  plan.tickets = batch;
  plan.scratch_bytes = static_cast<size_t>(plan.blocks) * sizeof(SlicePartial);
  return plan;
}

}  // namespace blendin::cuda
