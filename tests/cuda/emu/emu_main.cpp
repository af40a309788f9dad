// Runs the CUDA BlendIn kernel (csrc/cuda) in the block emulator on one
// case written by tests/cuda/test_cuda_emulated.py, and writes its outputs.
//
//   emu_main CASE_DIR
//
// CASE_DIR/meta.txt holds "name value" lines; arrays are raw files beside
// it (base.bin, guide.bin, optional g2b.bin / b2g.bin, optional per-row
// parameter files gamma.bin, alpha.bin, temperature.bin, top_k.bin,
// top_p.bin, seed.bin, offset.bin). Outputs go to CASE_DIR/out.bin:
// tokens (int64), intervened (uint8), alpha, base_top_prob,
// guide_top_prob, agree (float32), B entries each.
#include "cuda_emu.h"
// clang-format off: the emulator must come first
#include "../../csrc/cuda/blend_step_kernel.cuh"
#include "../../csrc/cuda/coop_kernel.cuh"
#include "../../csrc/cuda/coop_plan.h"
#include "../../csrc/cuda/launch_plan.h"
// clang-format on

#include <fstream>
#include <map>
#include <sstream>
#include <string>

namespace {

using blendin::RowParam;
using blendin::StepParams;
namespace bc = blendin::cuda;

std::map<std::string, std::string> read_meta(const std::string& dir) {
  std::map<std::string, std::string> meta;
  std::ifstream in(dir + "/meta.txt");
  std::string key, value;
  while (in >> key >> value) meta[key] = value;
  return meta;
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

struct Buffers {
  std::vector<std::vector<char>> keep;
  const void* load(const std::string& path) {
    keep.push_back(read_file(path));
    return keep.back().empty() ? nullptr : keep.back().data();
  }
};

template <typename U>
RowParam<U> row_param(Buffers& buffers, const std::string& dir, const std::string& name,
                      const std::map<std::string, std::string>& meta) {
  const void* data = buffers.load(dir + "/" + name + ".bin");
  const auto value = meta.find(name);
  RowParam<U> p{static_cast<const U*>(data), U(0), 1};
  if (value != meta.end()) p.value = static_cast<U>(std::stod(value->second));
  const auto stride = meta.find(name + "_stride");
  if (stride != meta.end()) p.stride = std::stoll(stride->second);
  return p;
}

std::vector<unsigned> block_order(int64_t blocks, const std::string& order_kind) {
  std::vector<unsigned> order(blocks);
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<unsigned>(i);
  if (order_kind == "reverse") {
    std::reverse(order.begin(), order.end());
  } else if (order_kind == "shuffle") {
    for (size_t i = order.size(); i > 1; --i)
      std::swap(order[i - 1], order[cuda_emu::next_random() % i]);
  }
  return order;
}

void check_tickets_zero(const std::vector<unsigned>& tickets) {
  for (size_t i = 0; i < tickets.size(); ++i) {
    if (tickets[i] != 0u) {
      std::fprintf(stderr, "ticket %zu not reset\n", i);
      std::exit(3);
    }
  }
}

// The "last_block" variant: blocks run one after another.
template <typename D>
void run_last_block(const void* base, const void* guide, const StepParams& p, int num_sms,
                    int64_t min_slice, const std::string& order_kind) {
  const bc::LaunchPlan plan = bc::make_launch_plan(p.batch, p.vocab, p.guide_vocab,
                                                   static_cast<int>(sizeof(D)), num_sms, min_slice);
  std::vector<unsigned> tickets(plan.tickets, 0u);
  std::vector<unsigned long long> scratch((plan.scratch_bytes + 7) / 8, 0x5a5a5a5a5a5a5a5aull);
  const bc::KernelArgs args{plan.slice_elems, plan.base_slices, plan.guide_slices, tickets.data(),
                            reinterpret_cast<bc::SlicePartial*>(scratch.data())};
  std::fprintf(stderr, "plan: %lld blocks, slice %lld, slices %d+%d\n",
               static_cast<long long>(plan.blocks), static_cast<long long>(plan.slice_elems),
               plan.base_slices, plan.guide_slices);
  cuda_emu::launch(block_order(plan.blocks, order_kind), static_cast<unsigned>(plan.blocks),
                   bc::kThreads, [&] {
                     bc::blend_step_kernel<D>(static_cast<const D*>(base),
                                              static_cast<const D*>(guide), p, args);
                   });
  check_tickets_zero(tickets);
}

// The "cooperative" variant: every block of the grid resident at once.
template <typename D>
void run_cooperative(const void* base, const void* guide, const StepParams& p,
                     int64_t resident_blocks, int team_cap, const std::string& order_kind) {
  const bc::CoopPlan plan = bc::make_coop_plan(
      p.batch, p.vocab, p.guide_vocab, static_cast<int>(sizeof(D)), resident_blocks, team_cap);
  if (plan.blocks == 0) {
    std::fprintf(stderr, "no cooperative plan fits %lld resident blocks\n",
                 static_cast<long long>(resident_blocks));
    std::exit(4);
  }
  std::vector<unsigned long long> ticket_words((plan.tickets + 1) / 2, 0ull);  // 8-byte aligned
  unsigned* tickets = reinterpret_cast<unsigned*>(ticket_words.data());
  std::vector<unsigned long long> scratch((plan.scratch_bytes + 7) / 8, 0x5a5a5a5a5a5a5a5aull);
  char* at = reinterpret_cast<char*>(scratch.data());
  const bc::CoopArgs args{plan.team,
                          plan.lanes,
                          plan.base_subblocks,
                          plan.guide_subblocks,
                          plan.member_subblocks,
                          tickets,
                          reinterpret_cast<bc::SlicePartial*>(at + plan.partial_offset),
                          reinterpret_cast<bc::CoopDecision*>(at + plan.decision_offset),
                          reinterpret_cast<blendin::MixtureArgmax*>(at + plan.mixture_offset),
                          reinterpret_cast<float*>(at + plan.subblock_offset),
                          reinterpret_cast<unsigned long long*>(at + plan.kept_offset),
                          reinterpret_cast<unsigned long long*>(at + plan.gather_offset)};
  std::fprintf(stderr, "coop plan: %lld blocks, team %d, lanes %lld, %lld+%lld sub-blocks\n",
               static_cast<long long>(plan.blocks), plan.team, static_cast<long long>(plan.lanes),
               static_cast<long long>(plan.base_subblocks),
               static_cast<long long>(plan.guide_subblocks));
  cuda_emu::launch_resident(block_order(plan.blocks, order_kind),
                            static_cast<unsigned>(plan.blocks), bc::kThreads, [&] {
                              bc::blend_step_coop_kernel<D>(static_cast<const D*>(base),
                                                            static_cast<const D*>(guide), p, args);
                            });
  check_tickets_zero(std::vector<unsigned>(tickets, tickets + plan.tickets));
}

template <typename D>
void run(const void* base, const void* guide, const StepParams& p,
         std::map<std::string, std::string>& meta) {
  const std::string order = meta["order"];
  if (meta["variant"] == "cooperative") {
    run_cooperative<D>(base, guide, p, std::stoll(meta["resident_blocks"]),
                       std::stoi(meta["team_cap"]), order);
  } else {
    run_last_block<D>(base, guide, p, std::stoi(meta["num_sms"]), std::stoll(meta["min_slice"]),
                      order);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: emu_main CASE_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  auto meta = read_meta(dir);
  Buffers buffers;
  StepParams p{};
  p.batch = std::stoll(meta["batch"]);
  p.vocab = std::stoll(meta["vocab"]);
  p.guide_vocab = std::stoll(meta["guide_vocab"]);
  p.base_row_stride = std::stoll(meta["base_stride"]);
  p.guide_row_stride = std::stoll(meta["guide_stride"]);
  const void* g2b = buffers.load(dir + "/g2b.bin");
  p.map = blendin::VocabMap{g2b, meta["g2b_int64"] == "1",
                            static_cast<const int32_t*>(buffers.load(dir + "/b2g.bin"))};
  p.gamma = row_param<float>(buffers, dir, "gamma", meta);
  p.alpha = row_param<float>(buffers, dir, "alpha", meta);
  p.temperature = row_param<float>(buffers, dir, "temperature", meta);
  p.top_k = row_param<int32_t>(buffers, dir, "top_k", meta);
  p.top_p = row_param<float>(buffers, dir, "top_p", meta);
  p.seed = row_param<int64_t>(buffers, dir, "seed", meta);
  p.offset = row_param<int64_t>(buffers, dir, "offset", meta);
  p.agree_bonus = std::stof(meta["agree_bonus"]);

  const int64_t b = p.batch;
  std::vector<int64_t> tokens(b, -7);
  std::vector<uint8_t> intervened(b, 7);
  std::vector<float> alpha(b), base_top(b), guide_top(b), agree(b);
  p.out = blendin::StepOutputs{tokens.data(),    reinterpret_cast<bool*>(intervened.data()),
                               alpha.data(),     base_top.data(),
                               guide_top.data(), agree.data()};

  const void* base = buffers.load(dir + "/base.bin");
  const void* guide = buffers.load(dir + "/guide.bin");
  cuda_emu::rng() ^= std::stoull(meta["emu_seed"]);
  const std::string dtype = meta["dtype"];
  if (b > 0) {
    if (dtype == "float32") {
      run<float>(base, guide, p, meta);
    } else if (dtype == "float16") {
      run<__half>(base, guide, p, meta);
    } else {
      run<__nv_bfloat16>(base, guide, p, meta);
    }
  }
  std::ofstream reads(dir + "/reads.txt");
  for (const auto& [block, bytes] : cuda_emu::block_reads()) {
    reads << block << " " << bytes.first << " " << bytes.second << "\n";
  }
  std::ofstream trace(dir + "/trace.txt");
  for (const auto& [name, count] : cuda_emu::traces()) trace << name << " " << count << "\n";
  std::ofstream out(dir + "/out.bin", std::ios::binary);
  out.write(reinterpret_cast<const char*>(tokens.data()), b * 8);
  out.write(reinterpret_cast<const char*>(intervened.data()), b);
  for (const auto* v : {&alpha, &base_top, &guide_top, &agree}) {
    out.write(reinterpret_cast<const char*>(v->data()), b * 4);
  }
  return 0;
}
