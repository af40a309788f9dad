"""The CUDA op against the float32 reference and against the CPU op, over
the CPU tests' matrix of cases; sampling frequencies; seeds; CUDA graph
capture and replay; one kernel launch per step; opcheck. Needs a GPU and an
extension built with CUDA (benchmarks/gpu_check.sh does both)."""

import math
import os

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


def _cuda_kernel_registered() -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("blendin_ext::blend_step", "CUDA")
    except RuntimeError:
        return False


if not torch.cuda.is_available():
    pytestmark = pytest.mark.skip(reason="no CUDA device")
elif not _cuda_kernel_registered() and os.environ.get("BLENDIN_REQUIRE_CUDA") != "1":
    pytestmark = pytest.mark.skip(
        reason="blendin_ext was built without its CUDA kernel (rebuild with BLENDIN_CUDA=1)"
    )

VOCABS = [1, 7, 50257, 128256, 262144]
BATCHES = [0, 1, 3, 64]
CUDA = torch.device("cuda")


def _pair(batch, vocab, dtype=torch.float32, seed=0, guide_vocab=None, pad=0):
    base = confident_logits(batch, vocab, seed=seed, dtype=dtype, pad=pad)
    guide = confident_logits(batch, guide_vocab or vocab, seed=seed + 1, dtype=dtype, pad=pad)
    return base, guide


def _to_cuda(value):
    if isinstance(value, torch.Tensor):
        return value.to(CUDA)
    if isinstance(value, blendin_ext.GuideMap):
        return blendin_ext.GuideMap(*(t.to(CUDA) for t in value))
    return value


def _same_layout_on_cuda(logits: torch.Tensor) -> torch.Tensor:
    """The logits on the GPU with the same row layout (expanded or padded)."""
    batch, vocab = logits.shape
    if batch > 1 and logits.stride(0) == 0:
        return logits[:1].to(CUDA).expand(batch, vocab)
    if batch > 1 and logits.stride(0) > vocab:
        wide = torch.zeros(batch, logits.stride(0), dtype=logits.dtype, device=CUDA)
        wide[:, :vocab] = logits.to(CUDA)
        return wide[:, :vocab]
    return logits.to(CUDA)


def check_cuda_op(base, guide, **kwargs):
    """CUDA op == reference (op_cases tolerances) and == CPU op, tokens
    exactly except at near ties of the exact step (near_tie's rule); returns
    the CUDA result. base/guide/kwargs are CPU values, moved here."""
    cuda_base, cuda_guide = _same_layout_on_cuda(base), _same_layout_on_cuda(guide)
    out = blendin_ext.blend_step(
        cuda_base, cuda_guide, **{k: _to_cuda(v) for k, v in kwargs.items()}
    )
    assert out.tokens.device.type == "cuda"
    assert_matches_reference(out, base, guide, **kwargs)
    cpu = blendin_ext.blend_step(base, guide, **kwargs)
    assert_tokens_agree(out.tokens, cpu.tokens, base, guide, names=("CUDA op", "CPU op"), **kwargs)
    for name in ("alpha", "base_top_prob", "guide_top_prob", "agree"):
        torch.testing.assert_close(
            getattr(out, name).cpu(),
            getattr(cpu, name),
            atol=1e-6,
            rtol=1e-5,
            equal_nan=True,
            msg=name,
        )
    return out


# ------------------------------------------------------- CPU test matrix ----
@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("batch", BATCHES)
def test_blendin_greedy_matches_reference_and_cpu(batch, vocab):
    if batch * vocab > 64 * 128256:
        batch = 16  # the reference on the CPU sets the pace
    base, guide = _pair(batch, vocab, seed=batch + vocab)
    check_cuda_op(base, guide, **STRATEGIES["blendin"])


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_strategy_and_dtype(strategy, dtype):
    base, guide = _pair(24, 50257, dtype=dtype, seed=7)
    check_cuda_op(base, guide, **STRATEGIES[strategy])
    base, guide = _pair(16, 7919, dtype=dtype, seed=11)
    check_cuda_op(base, guide, **STRATEGIES[strategy], temperature=0.8, seed=1234, offset=5)


@pytest.mark.parametrize(
    "top_k,top_p",
    [(1, None), (5, None), (None, 0.5), (40, 0.9), (3, 0.3), (1000, None), (None, 0.99)],
)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7])
def test_top_k_top_p_sampling(top_k, top_p, temperature):
    base, guide = _pair(32, 50257, seed=3, dtype=torch.bfloat16)
    check_cuda_op(
        base,
        guide,
        gamma=0.6,
        alpha="auto",
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=99,
        offset=2,
    )


@pytest.mark.parametrize("map_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_guide_vocabulary_map(map_dtype, temperature):
    base, guide = _pair(12, 32000, seed=5, guide_vocab=49152)
    mapping = random_guide_map(49152, 32000, seed=5, dtype=map_dtype)
    check_cuda_op(base, guide, gamma=0.7, temperature=temperature, seed=4, guide_to_base=mapping)
    out = check_cuda_op(
        base,
        guide,
        gamma=2.0,
        alpha=1.0,
        temperature=temperature,
        seed=4,
        top_k=30,
        guide_to_base=mapping,
    )
    inverse = blendin_ext.guide_map(mapping, 32000).base_to_guide
    assert (inverse[out.tokens.cpu()] >= 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strided_rows_and_masks(dtype):
    base, guide = _pair(9, 50257, dtype=dtype, seed=21, pad=13)
    base, guide = mask_some(base, 0.3, seed=1), mask_some(guide, 0.3, seed=2)
    for kwargs in (
        dict(gamma=0.5),
        dict(gamma=0.5, temperature=1.0, seed=3, top_k=50),
        dict(gamma=0.5, temperature=1.0, seed=3),
    ):
        check_cuda_op(base, guide, **kwargs)


def test_per_row_parameters_on_the_device():
    names = sorted(STRATEGIES)
    rows = len(names) * 4
    base, guide = _pair(rows, 4099, seed=31)
    gamma = torch.tensor([STRATEGIES[names[i % len(names)]]["gamma"] for i in range(rows)])
    alpha = torch.tensor(
        [
            -1.0
            if STRATEGIES[names[i % len(names)]]["alpha"] == "auto"
            else STRATEGIES[names[i % len(names)]]["alpha"]
            for i in range(rows)
        ]
    )
    temperature = torch.tensor([0.0, 0.7] * (rows // 2))
    top_p = torch.tensor([1.0, 0.9, 0.8] * (rows // 3))
    top_k = torch.tensor([0, 20] * (rows // 2), dtype=torch.int32)
    check_cuda_op(
        base,
        guide,
        gamma=gamma,
        alpha=alpha,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=torch.arange(rows),
        offset=torch.tensor([3]),
    )


def test_exact_greedy_when_candidates_cannot_decide():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 50257, generator=gen) * 0.01
    guide = torch.randn(6, 50257, generator=gen) * 0.01
    for alpha in (0.3, 0.5, "auto"):
        out = check_cuda_op(base, guide, gamma=1.0, alpha=alpha)
        assert out.intervened.all()


def test_ties_and_masks_by_hand():
    base = torch.zeros(2, 10)
    base[1, [3, 7]] = 5.0
    guide = torch.zeros(2, 10)
    guide[1, [7, 3]] = 5.0
    out = blendin_ext.blend_step(base.to(CUDA), guide.to(CUDA), gamma=2.0, alpha=0.5)
    assert out.tokens.tolist() == [0, 3]
    masked_both = torch.tensor([[0.0, -math.inf, 0.0, -math.inf, 0.0]], device=CUDA)
    many = blendin_ext.blend_step(
        masked_both.expand(4000, 5), masked_both.expand(4000, 5), gamma=2.0, temperature=2.0, seed=2
    )
    assert not ({1, 3} & set(many.tokens.tolist()))
    flat = torch.zeros(2, 5000)
    flat[:, ::7] = -1.0  # thousands of exact ties around the top-k / top-p cut
    for kwargs in (dict(top_k=2500), dict(top_p=0.37), dict(top_k=3000, top_p=0.5)):
        check_cuda_op(flat, flat.clone(), gamma=0.0, temperature=1.0, seed=3, **kwargs)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_bad_rows(temperature, dtype):
    rows, vocab, guide_vocab = 8, 4099, 5000
    base = confident_logits(rows, vocab, seed=3, dtype=dtype)
    guide = confident_logits(rows, guide_vocab, seed=4, dtype=dtype)
    mapping = random_guide_map(guide_vocab, vocab, seed=5)
    base[1, 17] = math.nan
    guide[2, 4000] = math.inf
    base[3] = -math.inf
    guide[4, mapping >= 0] = -math.inf
    guide[5, int((mapping < 0).nonzero()[0])] = math.nan
    out = check_cuda_op(
        base, guide, gamma=0.7, temperature=temperature, seed=9, guide_to_base=mapping
    )
    assert out.tokens.cpu()[[1, 2, 3, 4, 5]].tolist() == [-1] * 5


def test_out_of_range_device_values_make_rows_bad():
    base, guide = _pair(6, 500, seed=9)
    out = blendin_ext.blend_step(
        base.to(CUDA),
        guide.to(CUDA),
        gamma=torch.tensor([0.5, -1.0, 0.5, 0.5, 0.5, 0.5], device=CUDA),
        alpha=torch.tensor([-1.0, 0.3, 1.5, -1.0, 0.2, 0.2], device=CUDA),
        temperature=torch.tensor([0.0, 0.0, 0.0, -1.0, 0.5, 0.5], device=CUDA),
        top_p=torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.5], device=CUDA),
        top_k=torch.tensor([0, 0, 0, 0, 0, -3], dtype=torch.int32, device=CUDA),
    )
    assert out.tokens.tolist()[1:] == [-1] * 5 and out.tokens[0] >= 0
    good = random_guide_map(60, 50, seed=1)
    bad = good.clone()
    bad[5] = 50  # past the base vocabulary: only the kernel can see it without a sync
    maps = blendin_ext.GuideMap(
        bad.to(CUDA), blendin_ext.guide_map(good, 50).base_to_guide.to(CUDA)
    )
    base, guide = _pair(3, 50, seed=2, guide_vocab=60)
    out = blendin_ext.blend_step(base.to(CUDA), guide.to(CUDA), guide_to_base=maps, gamma=0.5)
    assert out.tokens.tolist() == [-1, -1, -1]


def test_empty_batch():
    out = blendin_ext.blend_step(
        torch.zeros(0, 50257, device=CUDA), torch.zeros(0, 50257, device=CUDA), temperature=1.0
    )
    assert all(t.shape == (0,) and t.device.type == "cuda" for t in out)


# -------------------------------------------------------------- sampling ----
@pytest.mark.parametrize(
    "temperature,top_k,top_p",
    [(1.0, None, None), (0.5, None, None), (2.0, 3, None), (1.0, None, 0.7), (0.8, 4, 0.8)],
)
@pytest.mark.parametrize("alpha", [0.3, "auto"])
def test_draw_frequencies_match_exact_mixture(temperature, top_k, top_p, alpha):
    pytest.importorskip("scipy")
    from tests.ops.test_sampling import DRAWS, assert_frequencies, exact_mixture

    gen = torch.Generator().manual_seed(1)
    base, guide = torch.randn(1, 7, generator=gen), torch.randn(1, 7, generator=gen) * 1.5
    out = blendin_ext.blend_step(
        base.to(CUDA).expand(DRAWS, 7),
        guide.to(CUDA).expand(DRAWS, 7),
        gamma=2.0,
        alpha=alpha,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=2024,
        offset=3,
    )
    a = float(out.alpha[0])
    expected = exact_mixture(base[0], guide[0], a, temperature, top_k, top_p)
    assert_frequencies(out.tokens.cpu(), expected)


def test_frequencies_on_a_large_vocabulary():
    pytest.importorskip("scipy")
    from tests.ops.test_sampling import assert_frequencies, exact_mixture

    base, guide = confident_logits(1, 50257, seed=4), confident_logits(1, 50257, seed=5)
    out = blendin_ext.blend_step(
        base.to(CUDA).expand(50_000, -1),
        guide.to(CUDA).expand(50_000, -1),
        gamma=2.0,
        alpha=0.5,
        temperature=0.7,
        top_k=20,
        seed=11,
    )
    assert_frequencies(out.tokens.cpu(), exact_mixture(base[0], guide[0], 0.5, 0.7, top_k=20))


def test_seeds_reproduce_and_per_row_seeds_ignore_position():
    base, guide = confident_logits(64, 50257, seed=1), confident_logits(64, 50257, seed=2)
    base, guide = base.to(CUDA), guide.to(CUDA)
    kwargs = dict(gamma=0.9, temperature=1.0, top_p=0.95)
    first = blendin_ext.blend_step(base, guide, seed=5, offset=17, **kwargs)
    again = blendin_ext.blend_step(base, guide, seed=5, offset=17, **kwargs)
    assert torch.equal(first.tokens, again.tokens)
    fresh = blendin_ext.blend_step(base, guide, seed=5, offset=18, **kwargs)
    assert (fresh.tokens != first.tokens).sum() > 16
    seeds = torch.arange(100, 108, device=CUDA)
    batch = blendin_ext.blend_step(base[:8], guide[:8], gamma=0.8, temperature=1.0, seed=seeds)
    shuffled = torch.tensor([3, 1, 0, 2, 7, 6, 5, 4], device=CUDA)
    moved = blendin_ext.blend_step(
        base[shuffled], guide[shuffled], gamma=0.8, temperature=1.0, seed=seeds[shuffled]
    )
    assert torch.equal(moved.tokens, batch.tokens[shuffled])


# ------------------------------------------------------ graphs, launches ----
@pytest.mark.parametrize("warm_up", [True, False])
def test_cuda_graph_capture_and_replay(warm_up):
    batch, vocab = 4, 32000
    base = torch.zeros(batch, vocab, device=CUDA, dtype=torch.bfloat16)
    guide = torch.zeros_like(base)
    mapping = blendin_ext.guide_map(torch.arange(vocab, device=CUDA), vocab)  # built before capture
    seed = torch.tensor([7], device=CUDA)
    offset = torch.tensor([0], device=CUDA)
    gamma = torch.full((batch,), 0.6, device=CUDA)
    kwargs = dict(guide_to_base=mapping, gamma=gamma, temperature=0.9, top_p=0.95)

    def step():
        return blendin_ext.blend_step(base, guide, seed=seed, offset=offset, **kwargs)

    stream = torch.cuda.Stream()
    if warm_up:
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            step()
        torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):  # without warm-up: first call inside capture
        captured = step()
    for k in range(4):
        b, g = _pair(batch, vocab, dtype=torch.bfloat16, seed=40 + k)
        base.copy_(b)
        guide.copy_(g)
        offset.fill_(k)
        graph.replay()
        eager = blendin_ext.blend_step(base, guide, seed=7, offset=k, **kwargs)
        for x, y in zip(captured, eager):
            assert torch.equal(x, y)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(gamma=0.4),
        dict(gamma=0.9, temperature=1.0, top_p=0.9),
        dict(gamma=0.9, temperature=0.7),
    ],
    ids=str,
)
@pytest.mark.parametrize("batch", [1, 64])
def test_one_kernel_launch_per_step(batch, kwargs):
    base, guide = _pair(batch, 128256, dtype=torch.bfloat16, seed=2)
    base, guide = base.to(CUDA), guide.to(CUDA)
    blendin_ext.blend_step(base, guide, **kwargs)  # first call sets up cached buffers
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        blendin_ext.blend_step(base, guide, **kwargs)
        torch.cuda.synchronize()
    device_events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    names = [e.name for e in device_events]
    assert len(device_events) == 1 and "blend_step_kernel" in names[0], names


def test_opcheck_on_cuda():
    from tests.ops.test_compile import _op_args

    base, guide = confident_logits(4, 300, seed=1), confident_logits(4, 350, seed=2)
    mapping = random_guide_map(350, 300, seed=3)
    for per_row in (False, True):
        args = _op_args(base, guide, mapping=mapping, per_row=per_row, temperature=0.8)
        args = tuple(a.to(CUDA) if isinstance(a, torch.Tensor) else a for a in args)
        torch.library.opcheck(torch.ops.blendin_ext.blend_step.default, args)
