"""The CUDA kernel's logic without a GPU: csrc/cuda runs in the block
emulator of tests/cuda/emu (every thread a fiber, real barriers and warp
collectives, blocks in shuffled orders) and must agree with the float32
reference and with the CPU op. Every test runs both kernel variants:
last_block (grids cut finely: small slices, many blocks per row, so the
multi-block combine is exercised on small inputs) and cooperative (small
resident grids, so rows get teams of several blocks that wait for one
another)."""

import math
import shutil

import pytest
import torch

import blendin_ext
from blendin_ext.testing.near_tie import assert_tokens_agree
from blendin_ext.testing.op_cases import (
    DTYPES,
    STRATEGIES,
    assert_matches_reference,
    confident_logits,
    mask_some,
    random_guide_map,
)
from tests.cuda.emulator import build_emulator, cuda_include_dir, run_emulated

pytestmark = pytest.mark.skipif(
    shutil.which("g++") is None or cuda_include_dir() is None,
    reason="the CUDA emulator needs g++ and the CUDA toolkit headers (cuda_fp16.h)",
)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    return build_emulator(tmp_path_factory.mktemp("cuda_emu"))


class EmulatedKernel:
    """One variant of the CUDA kernel in the emulator. A last_block grid
    (num_sms, min_slice) becomes a cooperative one of 8 x num_sms resident
    blocks."""

    def __init__(self, exe, variant):
        self.exe, self.variant = exe, variant

    def run(self, base, guide, num_sms=2, min_slice=0, **kwargs):
        if self.variant == "cooperative":
            return run_emulated(
                self.exe, base, guide, variant="cooperative", resident_blocks=8 * num_sms, **kwargs
            )
        return run_emulated(self.exe, base, guide, num_sms=num_sms, min_slice=min_slice, **kwargs)


@pytest.fixture(params=["last_block", "cooperative"])
def kernel(emulator, request):
    return EmulatedKernel(emulator, request.param)


def emulate_and_check(kernel, base, guide, grid=None, traces=None, **kwargs):
    """Emulated kernel == reference (tolerances of op_cases) and == CPU op."""
    out = kernel.run(base, guide, traces=traces, **(grid or {}), **kwargs)
    assert_matches_reference(out, base, guide, **kwargs)
    cpu = blendin_ext.blend_step(base, guide, **kwargs)
    # both match the reference; they may only part at a near tie of the exact step
    assert_tokens_agree(out.tokens, cpu.tokens, base, guide, names=("emulated", "CPU op"), **kwargs)
    return out


def _pair(batch, vocab, dtype=torch.float32, seed=0, guide_vocab=None, pad=0):
    base = confident_logits(batch, vocab, seed=seed, dtype=dtype, pad=pad)
    guide = confident_logits(batch, guide_vocab or vocab, seed=seed + 1, dtype=dtype, pad=pad)
    return base, guide


FINE = dict(min_slice=128)  # about 8 slices per model row of 1000


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_strategy_greedy_and_sampled(kernel, dtype):
    base, guide = _pair(4, 1000, dtype=dtype, seed=3)
    for strategy in STRATEGIES.values():
        emulate_and_check(kernel, base, guide, grid=FINE, **strategy)
        emulate_and_check(
            kernel, base, guide, grid=FINE, **strategy, temperature=0.8, seed=5, offset=2
        )


@pytest.mark.parametrize(
    "top_k,top_p,temperature",
    [(1, None, 1.0), (5, None, 1.0), (None, 0.7, 1.3), (40, 0.9, 0.6), (3, 0.3, 1.7)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_top_k_top_p(kernel, dtype, top_k, top_p, temperature):
    base, guide = _pair(4, 1000, dtype=dtype, seed=7)
    emulate_and_check(
        kernel,
        base,
        guide,
        grid=FINE,
        gamma=0.9,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=99,
        offset=2,
    )


@pytest.mark.parametrize("map_dtype", [torch.int32, torch.int64])
def test_guide_vocabulary_map(kernel, map_dtype):
    base, guide = _pair(5, 700, seed=5, guide_vocab=1100)
    mapping = random_guide_map(1100, 700, seed=5, dtype=map_dtype)
    grid = dict(min_slice=64)
    emulate_and_check(kernel, base, guide, grid=grid, guide_to_base=mapping, gamma=0.7)
    emulate_and_check(
        kernel, base, guide, grid=grid, guide_to_base=mapping, gamma=0.7, temperature=0.9, seed=4
    )
    for filters in (dict(top_k=7), dict(top_p=0.8)):
        out = emulate_and_check(
            kernel,
            base,
            guide,
            grid=grid,
            guide_to_base=mapping,
            gamma=2.0,
            alpha=1.0,
            temperature=0.9,
            seed=4,
            **filters,
        )
        inverse = blendin_ext.guide_map(mapping, 700).base_to_guide
        assert (inverse[out.tokens] >= 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strided_unaligned_rows_and_masks(kernel, dtype):
    # rows of 2001 with a pad of 13: no row starts on a 16-byte boundary
    base, guide = _pair(6, 2001, dtype=dtype, seed=21, pad=13)
    base, guide = mask_some(base, 0.3, seed=1), mask_some(guide, 0.3, seed=2)
    grid = dict(min_slice=200)
    emulate_and_check(kernel, base, guide, grid=grid, gamma=0.5)
    emulate_and_check(kernel, base, guide, grid=grid, gamma=0.5, temperature=1.0, seed=3, top_k=50)
    emulate_and_check(kernel, base, guide, grid=grid, gamma=0.5, temperature=1.0, seed=3)


def test_expanded_rows_and_per_row_seeds(kernel):
    base = confident_logits(1, 3000, seed=1).expand(5, -1)
    guide = confident_logits(1, 3000, seed=2).expand(5, -1)
    grid = dict(min_slice=256)
    emulate_and_check(
        kernel,
        base,
        guide,
        grid=grid,
        gamma=2.0,
        alpha=0.5,
        temperature=1.0,
        seed=torch.arange(5),
        offset=torch.arange(5) * 3,
    )
    emulate_and_check(
        kernel,
        base,
        guide,
        grid=grid,
        gamma=2.0,
        alpha=0.5,
        temperature=1.0,
        seed=7,
        offset=torch.tensor([4]),
    )


def test_flat_rows_take_the_exact_full_pass(kernel):
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(4, 3001, generator=gen) * 0.01
    guide = torch.randn(4, 3001, generator=gen) * 0.01
    for alpha in (0.3, "auto"):
        traces = {}
        out = emulate_and_check(
            kernel, base, guide, grid=dict(min_slice=256), traces=traces, gamma=1.0, alpha=alpha
        )
        assert out.intervened.all()
        path = "greedy_full_pass" if kernel.variant == "last_block" else "coop_greedy_scan"
        assert traces.get(path) == 4, traces


def test_peaked_rows_decide_from_candidates(kernel):
    base, guide = _pair(6, 2000, seed=12)
    traces = {}
    emulate_and_check(kernel, base, guide, grid=FINE, traces=traces, gamma=2.0, alpha=0.5)
    assert traces.get("greedy_candidates", 0) >= 5, traces


def test_bad_rows_and_out_of_range_row_parameters(kernel):
    base, guide = _pair(6, 500, seed=9)
    base[1, 7] = math.nan
    guide[2, 3] = math.inf
    base[3] = -math.inf
    guide[4, 100] = math.nan
    out = emulate_and_check(kernel, base, guide, grid=dict(min_slice=64), gamma=0.6)
    assert out.tokens[1:5].tolist() == [-1] * 4 and out.tokens[0] >= 0 and out.tokens[5] >= 0
    # per-row values that a device tensor could hold (the host never sees them)
    base, guide = _pair(6, 500, seed=9)
    out = kernel.run(
        base,
        guide,
        min_slice=64,
        gamma=torch.tensor([0.5, -1.0, 0.5, 0.5, 0.5, 0.5]),
        alpha=torch.tensor([-1.0, 0.3, 1.5, -1.0, 0.2, 0.2]),
        temperature=torch.tensor([0.0, 0.0, 0.0, -1.0, 0.5, 0.5]),
        top_p=torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.5]),
        top_k=torch.tensor([0, 0, 0, 0, 0, -3], dtype=torch.int32),
    )
    assert out.tokens.tolist()[1:] == [-1] * 5 and out.tokens[0] >= 0
    assert torch.isnan(out.base_top_prob[1:]).all() and not out.intervened[1:].any()


def test_out_of_range_map_entry_makes_rows_bad(kernel):
    from blendin_ext.ops import GuideMap

    base, guide = _pair(3, 50, seed=2, guide_vocab=60)
    good = random_guide_map(60, 50, seed=1)
    bad = good.clone()
    bad[5] = 50  # past the base vocabulary: only a device-side check can see it
    maps = GuideMap(bad, blendin_ext.guide_map(good, 50).base_to_guide)
    out = kernel.run(base, guide, guide_to_base=maps, gamma=0.5)
    assert out.tokens.tolist() == [-1, -1, -1]


def test_ties_beyond_the_gather_cap_use_digit_passes(kernel):
    base = torch.zeros(2, 5000)
    base[:, ::7] = -1.0  # ~4286 equal logits share the first distance bin
    guide = torch.zeros(2, 5000)
    grid = dict(min_slice=512)
    for filters in (dict(top_k=2500), dict(top_p=0.37), dict(top_k=3000, top_p=0.5)):
        traces = {}
        emulate_and_check(
            kernel,
            base,
            guide,
            grid=grid,
            traces=traces,
            gamma=0.0,
            temperature=1.0,
            seed=3,
            **filters,
        )
        # the cooperative kernel gathers at most 2048 keys, then one block selects
        assert traces.get("select_row_digit", 0) > 0, traces


def test_ties_within_the_gather_cap_use_shared_digit_passes(kernel):
    base = torch.full((2, 3000), -5.0)
    base[:, 100:700] = 0.0
    guide = torch.zeros(2, 3000)
    traces = {}
    emulate_and_check(
        kernel,
        base,
        guide,
        grid=dict(min_slice=512),
        traces=traces,
        gamma=0.0,
        temperature=1.0,
        top_k=300,
        seed=3,
    )
    if kernel.variant == "last_block":
        assert traces.get("select_shared_digit", 0) > 0, traces
    else:  # 600 tied keys are gathered and sorted by the team's last member
        assert traces.get("coop_select", 0) == 2 and "coop_select_overflow" not in traces, traces


def test_top_k_beyond_the_valid_entries_keeps_all(kernel):
    base = mask_some(confident_logits(3, 1000, seed=3), 0.9, seed=4)
    guide = confident_logits(3, 1000, seed=5)
    traces = {}
    emulate_and_check(
        kernel,
        base,
        guide,
        grid=dict(min_slice=512),
        traces=traces,
        gamma=0.0,
        temperature=1.0,
        top_k=500,
        top_p=0.99,
        seed=3,
    )
    keep_all = "select_keep_all" if kernel.variant == "last_block" else "coop_select_keep_all"
    assert traces.get(keep_all) == 3, traces


def test_cut_inside_the_top_k_list_needs_no_select_pass(kernel):
    base, guide = _pair(8, 3000, seed=17)
    for filters in (dict(top_k=1), dict(top_k=8), dict(top_k=5, top_p=0.6), dict(top_p=0.3)):
        traces = {}
        emulate_and_check(
            kernel,
            base,
            guide,
            grid=FINE,
            traces=traces,
            gamma=2.0,
            alpha=0.5,
            temperature=0.8,
            seed=21,
            **filters,
        )
        assert traces.get("select_from_list", 0) >= 4, (filters, traces)
        if "top_p" not in filters:
            assert "select_distance_pass" not in traces, (filters, traces)


def test_low_temperature_cut_in_the_far_tail(kernel):
    gen = torch.Generator().manual_seed(4)
    base, guide = torch.randn(2, 4000, generator=gen) * 5, torch.randn(2, 4000, generator=gen)
    emulate_and_check(
        kernel,
        base,
        guide,
        grid=dict(min_slice=512),
        gamma=0.0,
        temperature=0.05,
        top_k=3000,
        seed=9,
    )


def test_many_slices_per_row_in_any_block_order(kernel):
    # about 70 slices per model row (each merging lane takes several); the
    # last block to arrive finishes the row, whichever it is, and the
    # result does not depend on it
    base, guide = _pair(2, 2000, seed=13)
    results = []
    for order in ("natural", "reverse", "shuffle"):
        grid = dict(num_sms=40, min_slice=8, order=order)
        for kwargs in (
            dict(gamma=2.0, alpha=0.5),
            dict(gamma=2.0, temperature=1.0, seed=1),
            dict(gamma=2.0, temperature=1.0, seed=1, top_k=20),
        ):
            results.append(emulate_and_check(kernel, base, guide, grid=grid, **kwargs))
    for i in range(3):
        for other in (results[3 + i], results[6 + i]):
            for x, y in zip(results[i], other):
                assert torch.equal(x, y)


@pytest.mark.parametrize("vocab", [1, 7])
def test_tiny_vocabularies(kernel, vocab):
    base, guide = _pair(3, vocab, seed=1)
    emulate_and_check(kernel, base, guide, gamma=0.9)
    emulate_and_check(kernel, base, guide, gamma=0.9, temperature=1.0, seed=1, top_k=3, top_p=0.5)


def test_same_seed_same_tokens(kernel):
    base, guide = _pair(8, 1500, seed=31)
    kwargs = dict(gamma=0.9, temperature=1.0, top_p=0.95, seed=5, offset=17)
    first = kernel.run(base, guide, emu_seed=1, **kwargs)
    again = kernel.run(base, guide, emu_seed=2, order="reverse", **kwargs)
    assert torch.equal(first.tokens, again.tokens)


def test_tiny_temperatures_saturate_like_the_cpu_op(kernel):
    """A positive temperature whose reciprocal overflows float32 samples at
    the limit (2^-100), as the CPU op and the reference do, never a bad row."""
    base, guide = _pair(8, 700, seed=31)
    temps = torch.tensor([1e-40, 1e-45, 0.0, 2.0**-100, 1e-38, 1e-44, 0.7, 1e-39])
    for alpha in (0.5, "auto"):
        out = emulate_and_check(
            kernel, base, guide, grid=FINE, gamma=2.0, alpha=alpha, temperature=temps, seed=5
        )
        assert (out.tokens >= 0).all()
