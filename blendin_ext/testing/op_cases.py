"""Inputs and comparisons for testing an implementation of the BlendIn step
against the float32 reference: the project's CPU, CUDA and emulated kernels
use them, and so can a kernel variant of your own.

    out = my_blend_step(base, guide, **STRATEGIES["blendin"])
    assert_matches_reference(out, base, guide, **STRATEGIES["blendin"])
"""
from __future__ import annotations

import math

import torch

from blendin_ext.ops import reference
from blendin_ext.ops.strategies import STRATEGIES as TABLE
from blendin_ext.ops.strategies import op_kwargs

# Every strategy of the table as blend_step keyword arguments (gamma 0.4,
# the default weight of the fixed blends).
STRATEGIES = {name: op_kwargs(name) for name in TABLE}

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def confident_logits(batch: int, vocab: int, *, seed: int, scale: float = 2.0,
                     dtype=torch.float32, pad: int = 0) -> torch.Tensor:
    """Random logits whose top-1 probability varies across rows (about
    uniform in (0.05, 0.95)), so a batch mixes intervening and confident rows.
    With pad > 0 the result is a strided view into a wider buffer."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, vocab, generator=gen, dtype=torch.float64) * scale
    if vocab > 1 and batch > 0:
        target = 0.05 + 0.9 * torch.rand(batch, generator=gen, dtype=torch.float64)
        spike = torch.randint(vocab, (batch,), generator=gen)
        rest = torch.logsumexp(x.scatter(1, spike[:, None], -math.inf), dim=1)
        x[torch.arange(batch), spike] = rest + torch.log(target / (1 - target))
    x = x.to(dtype)
    if pad:
        wide = torch.zeros(batch, vocab + pad, dtype=dtype)
        wide[:, :vocab] = x
        return wide[:, :vocab]
    return x


def mask_some(logits: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sets a random fraction of each row to -inf, keeping each row's max."""
    gen = torch.Generator().manual_seed(seed)
    drop = torch.rand(logits.shape, generator=gen) < fraction
    drop &= logits != logits.max(dim=-1, keepdim=True).values
    return logits.masked_fill(drop, -math.inf)


def random_guide_map(guide_vocab: int, base_vocab: int, seed: int,
                     unmapped: float = 0.2, dtype=torch.int64) -> torch.Tensor:
    """An injective partial map guide id -> base id, -1 for about `unmapped`
    of the guide tokens (at least one token stays mapped)."""
    gen = torch.Generator().manual_seed(seed)
    n = min(guide_vocab, base_vocab)
    targets = torch.randperm(base_vocab, generator=gen)[:n]
    mapping = torch.full((guide_vocab,), -1, dtype=torch.int64)
    slots = torch.randperm(guide_vocab, generator=gen)[:n]
    mapping[slots] = targets
    drop = torch.rand(guide_vocab, generator=gen) < unmapped
    drop[slots[0]] = False
    mapping[drop] = -1
    return mapping.to(dtype)


def mixture_probs(out, base, guide, guide_to_base=None) -> torch.Tensor:
    """q = a * p~_g + (1 - a) * p_b at temperature 1, in float64, from the
    alpha the op reported (used to recognise genuine near ties)."""
    b = base.double()
    g = guide.double()
    if guide_to_base is not None:
        m = guide_to_base.long()
        moved = torch.full_like(b, -math.inf)
        moved[:, m[m >= 0]] = g[:, m >= 0]
        g = moved
    a = out.alpha.double().nan_to_num(0.0)[:, None]
    return a * torch.softmax(g, -1) + (1 - a) * torch.softmax(b, -1)


def assert_matches_reference(out, base, guide, *, rel_tie=1e-5, **kwargs):
    """The op's result equals the float32 reference: statistics within float
    tolerance, tokens exactly, except greedy rows whose two tokens are a
    genuine near tie of the mixture (relative gap < rel_tie)."""
    ref = reference.blend_step(base, guide, **kwargs)
    for name in ("alpha", "base_top_prob", "guide_top_prob", "agree"):
        torch.testing.assert_close(getattr(out, name).cpu(), getattr(ref, name).cpu(),
                                   atol=2e-5, rtol=2e-4, equal_nan=True, msg=name)
    assert torch.equal(out.intervened.cpu(), ref.intervened.cpu())
    differ = (out.tokens.cpu() != ref.tokens.cpu()).nonzero().flatten()
    if len(differ) == 0:
        return ref
    plans = reference.sampling_plans(base, guide, **kwargs)
    for row in [r for r in differ.tolist() if r in plans]:
        assert_near_cdf_boundary(plans[row], int(out.tokens[row]), row)
    differ = [r for r in differ.tolist() if r not in plans]
    m = kwargs.get("guide_to_base")
    q = mixture_probs(out, base.cpu(), guide.cpu(), None if m is None else getattr(m, "guide_to_base", m).cpu())
    for row in differ:
        got, want = int(out.tokens[row]), int(ref.tokens[row])
        assert got >= 0 and want >= 0, f"row {row}: bad-row mismatch {got} vs {want}"
        gap = abs(q[row, got] - q[row, want]) / q[row, want]
        assert gap < rel_tie, f"row {row}: token {got} vs reference {want} (gap {gap:.2e})"
    return ref


def assert_near_cdf_boundary(plan, token: int, row: int, tol: float = 1e-5):
    """A sampled token that differs from the reference's is acceptable only
    when the uniform lies within float rounding of the CDF interval of that
    token (the float32 sums of the kernel and the float64 CDF disagree)."""
    ids, cdf, u = plan
    where = (ids == token).nonzero().flatten()
    assert len(where) == 1, f"row {row}: token {token} is not in the kept set"
    pos = int(where[0])
    lo = 0.0 if pos == 0 else float(cdf[pos - 1])
    hi = float(cdf[pos])
    assert lo - tol <= u <= hi + tol, \
        f"row {row}: token {token} has CDF interval [{lo}, {hi}] but u = {u}"
