// The plan of the cooperative kernel (variant "cooperative"), and where its
// workspace lies. Plain C++ (no CUDA headers) so the launcher, the workspace
// query and the emulator tests compute the very same plan.
//
// Each row is worked on by a *team* of `team` blocks that can wait for one
// another (row barriers), so every phase of the step -- statistics, the
// exact greedy fallback, locating a sampled token -- is spread over the
// team instead of falling on one finishing block. Waiting is only safe when
// every block of the grid is resident at once: the grid never exceeds
// `resident_blocks` (SMs x occupancy, launched as a cooperative kernel, which
// the driver refuses rather than oversubscribes).
//
// A row's logits are cut into *sub-blocks* of one warp-wide vector load
// (32 lanes x 16 bytes: 128 fp32 or 256 fp16/bf16 logits). The sub-blocks of
// the base row, then those of the guide row, are split into `team`
// contiguous ranges, one per member. Each sub-block's maximum is kept in the
// workspace: later phases read again only the sub-blocks that can matter.
//
// With team == 1 a block owns whole rows (rows = lanes, looping by
// `lanes`); with team > 1 every row has its own team (lanes == batch).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "blendin/blend_math.h"

namespace blendin::cuda {

constexpr int kCoopThreads = 256;  // threads per block (= kThreads)
constexpr int kCoopMaxTeam = 64;   // blocks per row at most
constexpr int kCoopMinSubblocksPerMember = 2;
constexpr int kCoopMaxMemberSubblocks = 4096;  // bounds a member's shared arrays

// One member's statistics of its part of the base or the guide row.
struct CoopPartial {
  SoftmaxPartial softmax;
  float top_value[kTopK];
  int32_t top_id[kTopK];
};

// What the leader of a row publishes for the rest of its team.
struct CoopDecision {
  int32_t mode;       // CoopMode (coop_kernel.cuh)
  int32_t owner;      // walk: the member whose part holds the target
  int32_t use_guide;  // sampling: the component drawn from
  float alpha;
  float threshold;                 // greedy scan: base logits below it cannot win
  MixtureArgmax best;              // greedy scan: the best of the candidates
  float u_token;                   // sampling: the token's uniform
  int32_t bound_bin;               // select: sub-blocks whose max lies past it hold no kept entry
  int32_t gather_lo;               // select: entries of bins below gather_lo are kept for sure,
  int32_t gather_hi;               //   those of bins [gather_lo, gather_hi] are gathered
  unsigned long long above_count;  // select: entries (and their mass) of the
  unsigned long long above_mass;   //   bins below gather_lo
  double remainder;                // walk: the target within the owner's part
  SoftmaxPartial base;             // the merged row statistics
  SoftmaxPartial guide;
};
static_assert(sizeof(CoopDecision) % 4 == 0, "copied as 32-bit words");

// Per-row words that are zero between launches (the launcher's zeroed
// ticket buffer). Barrier k of a row is passed once `arrived` reaches
// k * team; its leader (the last to arrive) publishes and then sets
// `released` to k. Every member takes a `finished` ticket when it is done
// with the row; the last one completes the row's last phase and resets
// everything here, so the words are zero again for the next launch.
constexpr int kCoopSelectBins = 1024;  // = kSelectBins of select_cut.cuh
constexpr int kCoopGatherCap = 2048;   // keys gathered for an exact top-k / top-p cut
struct CoopSync {
  unsigned int arrived;
  unsigned int released;
  unsigned int finished;
  unsigned int gathered;                         // keys in the row's gather buffer
  unsigned int bin_count[kCoopSelectBins];       // the team's histogram of
  unsigned long long bin_mass[kCoopSelectBins];  // distance bins (select)
};
constexpr int kCoopSyncWords = static_cast<int>(sizeof(CoopSync) / 4);  // per row lane
static_assert(sizeof(CoopSync) % 8 == 0, "lanes stay 8-byte aligned");

struct CoopPlan {
  int64_t batch = 0;
  int32_t team = 1;            // blocks per row
  int64_t lanes = 0;           // rows worked on at once (grid = lanes * team)
  int64_t subblock_elems = 0;  // logits per sub-block
  int64_t base_subblocks = 0;
  int64_t guide_subblocks = 0;
  int64_t member_subblocks = 0;  // sub-blocks per member (the last may have fewer)
  int64_t blocks = 0;
  int64_t tickets = 0;  // lanes x kCoopSyncWords zeroed words
  // scratch, in bytes from its start (all 16-byte aligned; no initialisation)
  size_t partial_offset = 0;   // lanes x team x 2 CoopPartial
  size_t decision_offset = 0;  // lanes x CoopDecision
  size_t mixture_offset = 0;   // lanes x team x MixtureArgmax
  size_t subblock_offset = 0;  // lanes x (base + guide sub-blocks) floats
  size_t kept_offset = 0;      // lanes x max(base, guide sub-blocks) u64: kept mass per sub-block
  size_t gather_offset = 0;    // lanes x kCoopGatherCap u64 keys
  size_t scratch_bytes = 0;

  int64_t subblocks() const { return base_subblocks + guide_subblocks; }
};

inline int64_t coop_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline size_t coop_align16(size_t n) { return (n + 15) & ~static_cast<size_t>(15); }

// `resident_blocks`: blocks of the kernel the device runs at once. `team_cap`
// (0: no cap) lets tests force small or large teams.
inline CoopPlan make_coop_plan(int64_t batch, int64_t vocab, int64_t guide_vocab, int element_bytes,
                               int64_t resident_blocks, int team_cap = 0) {
  CoopPlan plan;
  plan.batch = batch;
  plan.subblock_elems = 32 * (16 / element_bytes);
  plan.base_subblocks = coop_ceil_div(vocab, plan.subblock_elems);
  plan.guide_subblocks = coop_ceil_div(guide_vocab, plan.subblock_elems);
  const int64_t total = plan.subblocks();
  resident_blocks = std::max<int64_t>(resident_blocks, 1);
  const int64_t rows = std::max<int64_t>(batch, 1);
  int64_t team = std::min<int64_t>(resident_blocks / rows, kCoopMaxTeam);
  team = std::min<int64_t>(team, std::max<int64_t>(1, total / kCoopMinSubblocksPerMember));
  if (team_cap > 0) team = std::min<int64_t>(team, team_cap);
  team = std::max<int64_t>(team, coop_ceil_div(total, kCoopMaxMemberSubblocks));
  team = std::max<int64_t>(team, 1);
  plan.team = static_cast<int32_t>(team);
  plan.member_subblocks = coop_ceil_div(total, team);
  // A bigger team than the grid holds would wait forever: such shapes (a
  // vocabulary of millions with a tiny GPU) are not planned (blocks == 0).
  plan.lanes = team > 1 ? rows : std::min(rows, resident_blocks);
  plan.blocks = plan.lanes * team <= resident_blocks ? plan.lanes * team : 0;

  plan.tickets = plan.lanes * kCoopSyncWords;
  size_t at = 0;
  plan.partial_offset = at;
  at = coop_align16(at + sizeof(CoopPartial) * 2 * plan.lanes * team);
  plan.decision_offset = at;
  at = coop_align16(at + sizeof(CoopDecision) * plan.lanes);
  plan.mixture_offset = at;
  at = coop_align16(at + sizeof(MixtureArgmax) * plan.lanes * team);
  plan.subblock_offset = at;
  at = coop_align16(at + sizeof(float) * plan.lanes * total);
  plan.kept_offset = at;
  at = coop_align16(at + sizeof(unsigned long long) * plan.lanes *
                             std::max(plan.base_subblocks, plan.guide_subblocks));
  plan.gather_offset = at;
  at = coop_align16(at + sizeof(unsigned long long) * plan.lanes * kCoopGatherCap);
  plan.scratch_bytes = at;
  return plan;
}

}  // namespace blendin::cuda
