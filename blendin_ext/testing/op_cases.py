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
from blendin_ext.testing.near_tie import assert_tokens_agree

# Every strategy of the table as blend_step keyword arguments (gamma 0.4,
# the default weight of the fixed blends).
STRATEGIES = {name: op_kwargs(name) for name in TABLE}

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# The dtype of each per-row tensor argument of blend_step (its schema).
ROW_TENSOR_DTYPES = dict(
    gamma=torch.float32,
    alpha=torch.float32,
    temperature=torch.float32,
    top_k=torch.int32,
    top_p=torch.float32,
    seed=torch.int64,
    offset=torch.int64,
)


def confident_logits(
    batch: int, vocab: int, *, seed: int, scale: float = 2.0, dtype=torch.float32, pad: int = 0
) -> torch.Tensor:
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


def random_guide_map(
    guide_vocab: int, base_vocab: int, seed: int, unmapped: float = 0.2, dtype=torch.int64
) -> torch.Tensor:
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


def assert_matches_reference(out, base, guide, **kwargs):
    """The op's result equals the float32 reference: statistics within float
    tolerance, tokens exactly except at a near tie of the exact step
    (blendin_ext.testing.near_tie)."""
    ref = reference.blend_step(base, guide, **kwargs)
    for name in ("alpha", "base_top_prob", "guide_top_prob", "agree"):
        torch.testing.assert_close(
            getattr(out, name).cpu(),
            getattr(ref, name).cpu(),
            atol=2e-5,
            rtol=2e-4,
            equal_nan=True,
            msg=name,
        )
    assert torch.equal(out.intervened.cpu(), ref.intervened.cpu())
    assert_tokens_agree(out.tokens, ref.tokens, base, guide, names=("op", "reference"), **kwargs)
    return ref
