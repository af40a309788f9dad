// The single kernel of one BlendIn step. Block (row, slice) computes the
// statistics of its slice of the row's base or guide logits and writes them
// to the workspace; the last block of the row to arrive (a per-row ticket,
// reset by that block for the next launch) merges the row and finishes it:
// decision, greedy token or sampled token. One launch at every batch size,
// no host synchronisation, no memset.
//
// Agreement with the CPU kernel: the decision, the weight, exp and the RNG
// are the shared host/device code, so for the same seed and offset the
// tokens are the CPU's -- except where a float sum taken in another order
// (block trees here, chunk loops there; slices also depend on the SM count)
// moves a value across a boundary: two greedy candidates whose mixture
// probabilities tie to ~1e-6 relative, or a sampling uniform within ~1e-6
// of a CDF step. Top-k/top-p masses are 32.32 fixed point here (exact and
// order-free; weights below 2^-33 of the max count as 0), float on the CPU.
#pragma once

#include "device_common.cuh"
#include "launch_plan.h"
#include "row_finish.cuh"
#include "row_sample.cuh"
#include "select_cut.cuh"
#include "slice_stats.cuh"

namespace blendin::cuda {

// The plan and workspace as the kernel needs them.
struct KernelArgs {
  int64_t slice_elems;
  int32_t base_slices;
  int32_t guide_slices;
  unsigned int* tickets;   // (batch,) arrival counters, zero between launches
  SlicePartial* partials;  // (batch, base_slices + guide_slices)
};

struct KernelShared {
  union {
    SliceScratch slice;
    SelectShared select;
    SliceMassShared slice_mass;
  } u;
  RowShared row;
  SampleShared sample;
  ReduceScratch reduce;
  int is_last;
};

// Publishes this block's partial and takes a ticket; true in every thread of
// the row's last block, which also resets the ticket.
__device__ __forceinline__ bool arrive_last(unsigned int* ticket, unsigned int slices,
                                            int& is_last) {
  __threadfence();  // the partial written by warp 0 is visible device-wide
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned int before = atomicAdd(ticket, 1u);
    const bool last = before == slices - 1u;
    if (last) atomicExch(ticket, 0u);  // every block of the row has arrived
    is_last = last;
  }
  __syncthreads();
  const bool last = is_last != 0;
  if (last) __threadfence();  // order the partial reads after the ticket
  return last;
}

template <typename T>
__device__ void run_slice_statistics(const RowView<T>& view, int64_t begin, int64_t end,
                                     float inv_t, bool tempered, KernelShared& sh,
                                     SlicePartial* out) {
  if (view.mapped) {
    if (tempered) {
      slice_statistics<T, true, true>(view, begin, end, inv_t, sh.u.slice, sh.reduce, out);
    } else {
      slice_statistics<T, true, false>(view, begin, end, inv_t, sh.u.slice, sh.reduce, out);
    }
  } else if (tempered) {
    slice_statistics<T, false, true>(view, begin, end, inv_t, sh.u.slice, sh.reduce, out);
  } else {
    slice_statistics<T, false, false>(view, begin, end, inv_t, sh.u.slice, sh.reduce, out);
  }
}

// The row's context, built only after the statistics pass so that none of it
// occupies registers during the hot loop.
template <typename T>
__device__ __forceinline__ RowContext<T> row_context(const T* base, const T* guide,
                                                     const StepParams& p, const KernelArgs& args,
                                                     int64_t row, float inv_t) {
  RowContext<T> ctx;
  ctx.row = row;
  ctx.base = RowView<T>{base + row * p.base_row_stride, p.vocab, p.map, false, p.vocab};
  ctx.guide =
      RowView<T>{guide + row * p.guide_row_stride, p.guide_vocab, p.map, p.map.present(), p.vocab};
  ctx.partials = args.partials + row * (args.base_slices + args.guide_slices);
  ctx.base_slices = args.base_slices;
  ctx.guide_slices = args.guide_slices;
  ctx.slice_elems = args.slice_elems;
  ctx.inv_temperature = inv_t;
  return ctx;
}

template <typename T>
__device__ __forceinline__ float row_inv_temperature(const StepParams& p, int64_t row) {
  return inverse_temperature(p.temperature.at(row));
}

// At most 128 registers: two blocks per SM, each thread with kUnroll 16-byte
// loads in flight, is what a bandwidth-bound pass needs on A100/H100.
template <typename T>
__global__ void __launch_bounds__(kThreads, 2)
    blend_step_kernel(const T* __restrict__ base, const T* __restrict__ guide,
                      const __grid_constant__ StepParams p, const KernelArgs args) {
  __shared__ KernelShared sh;
  const int32_t slices = args.base_slices + args.guide_slices;
  const int64_t row = blockIdx.x / slices;
  {
    const int32_t slice = static_cast<int32_t>(blockIdx.x % slices);
    const float temperature = p.temperature.at(row);
    const float inv_t = row_inv_temperature<T>(p, row);
    const bool tempered = temperature > 0.0f && temperature != 1.0f;
    const bool is_guide = slice >= args.base_slices;
    const RowView<T> view =
        is_guide ? RowView<T>{guide + row * p.guide_row_stride, p.guide_vocab, p.map,
                              p.map.present(), p.vocab}
                 : RowView<T>{base + row * p.base_row_stride, p.vocab, p.map, false, p.vocab};
    const int64_t begin = (is_guide ? slice - args.base_slices : slice) * args.slice_elems;
    const int64_t end =
        begin + args.slice_elems < view.length ? begin + args.slice_elems : view.length;
    run_slice_statistics(view, begin, end, inv_t, tempered, sh,
                         args.partials + row * slices + slice);
  }
  if (!arrive_last(args.tickets + row, static_cast<unsigned int>(slices), sh.is_last)) return;

  const RowContext<T> ctx = row_context(base, guide, p, args, row, row_inv_temperature<T>(p, row));
  merge_row_partials(ctx, sh.row);
  decide_row(ctx, p, sh.row);
  if (sh.row.mode == kRowGreedy && !sh.row.candidates_exact) {
    greedy_full_pass(ctx, p, sh.row, sh.reduce);
  } else if (sh.row.mode == kRowSample) {
    sample_row(ctx, p, sh.row, sh.sample, sh.u.slice_mass, sh.u.select, sh.reduce);
  }
}

}  // namespace blendin::cuda
