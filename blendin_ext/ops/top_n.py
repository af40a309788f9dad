"""The paper's published BlendIn step, for parity (strategy ``blendin-top100``).

The authors' implementation sees each model only through its top-N list of
(token string, log-probability), as an OpenAI-style completions server
returns it. One greedy step, per row:

- ``c_b`` = the base's top-1 probability; the row intervenes when
  ``c_b < gamma`` (the guide is asked only then);
- ``c_g`` = the guide's top-1 probability over its *whole* vocabulary (the
  server knows nothing of the base, so nothing is renormalised);
- ``agree`` = the base's probability of the guide's favourite string, 0
  when that string is not in the base's list (or has no base spelling);
- ``a = clamp(c_g / (c_b + c_g) + agree_bonus * agree, 0, 1)`` (or the
  fixed alpha), 0 where the row does not intervene;
- ``q(s) = a * p_g(s) + (1 - a) * p_b(s)`` over the union of both lists'
  strings, a string missing from a list counting 0 there; the token is
  ``argmax q`` (ties: the smallest base id).

A string is a base token. A guide token's string is its base twin (the
base token of the same bytes, ``guide_to_base``), itself when the models
share the vocabulary; a guide token without a twin cannot be emitted, so it
only counts towards ``c_g`` (the authors would append its text). Every
probability is the model's full-softmax probability, not renormalised over
the list. Where it differs from the exact op: decode/README.md.

`top_n_step` is that step on (B, V) / (B, Vg) logits, batched, with the
op's argument and result types, so the decode loop and the vLLM plug-in
call it where they call the op; `TopNRows` applies it to the rows of a
batch that asked for it. `blend_lists` is the same rule on two
{string: probability} lists, as a client of two completion servers
computes it (benchmarks/bench_official.py; the tests' reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence, Union

import torch

from blendin_ext.ops.args import BlendStepResult, StepArgs
from blendin_ext.ops.maps import GuideMap


def _per_row(tensor: Optional[torch.Tensor], value: float, rows: int, device) -> torch.Tensor:
    """A StepArgs (tensor or scalar) slot as a (rows,) float32 tensor."""
    if tensor is None:
        return torch.full((rows,), float(value), dtype=torch.float32, device=device)
    return tensor.to(device, torch.float32).reshape(-1).expand(rows)


def _top(logits: torch.Tensor, k: int, n: torch.Tensor):
    """(probabilities, ids) of each row's top-k tokens, best first, with the
    entries at rank >= n[row] zeroed (rows may ask for shorter lists)."""
    logp = torch.log_softmax(logits.float(), -1)
    values, ids = logp.topk(min(k, logp.shape[-1]), -1)
    ranks = torch.arange(values.shape[-1], device=values.device)
    return values.exp().masked_fill(ranks >= n[:, None], 0.0), ids


def _bad_rows(base: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """Rows the op also refuses: NaN or +inf anywhere, or nothing finite."""

    def bad(x):
        return (torch.isnan(x) | (x == float("inf"))).any(-1) | ~torch.isfinite(x).any(-1)

    return bad(base) | bad(guide)


def _union_argmax(ids: torch.Tensor, weights: torch.Tensor, vocab: int):
    """Per row, the best q and its base id (ties: the smallest id), where q
    of a base id sums the weights of all its entries in `ids` (-1: no base
    id, never a candidate). Short lists compare every pair of entries (2N x
    2N per row, N = 100: cheap); lists as long as the vocabulary scatter
    into a dense row instead (the pairs would take (2V)^2 memory). Where
    the best q is 0 the id is any zero-weight one (the caller falls back)."""
    if ids.shape[-1] ** 2 <= 4 * vocab:
        q = ((ids[:, :, None] == ids[:, None, :]) * weights[:, None, :]).sum(-1)
        q = q.masked_fill(ids < 0, -1.0)
        best = q.amax(-1, keepdim=True)
        none = torch.iinfo(torch.int64).max
        return best[:, 0], torch.where(q == best, ids, none).amin(-1)
    dense = weights.new_zeros((ids.shape[0], vocab + 1))  # column 0: entries without an id
    dense.scatter_add_(1, ids + 1, weights)
    best, column = dense[:, 1:].max(-1)  # max returns the first (smallest id) of ties
    return best, column


def top_n_step(
    base_logits: torch.Tensor,
    guide_logits: torch.Tensor,
    guide_to_base: Optional[GuideMap],
    args: StepArgs,
    top_n: Union[int, torch.Tensor] = 100,
) -> BlendStepResult:
    """The published step on a batch (module docstring), greedy.

    base_logits: (B, V); guide_logits: (B, Vg), any float dtype, one device.
    guide_to_base: the GuideMap of a guide with another vocabulary, or None
        when guide ids are base ids (then Vg == V).
    args: gamma, alpha (negative: auto) and agree_bonus are read, per row or
        shared; temperature must be 0 (the procedure is greedy).
    top_n: list length N >= 1, one for all rows or a (B,) integer tensor.
    Returns the op's six outputs; guide_top_prob is c_g over the guide's
    whole vocabulary, and a bad row (NaN / +inf / nothing finite) gets
    token -1 and NaN statistics, as in the op.
    """
    temperature = args.temperature_tensor
    if args.temperature_value != 0 if temperature is None else bool((temperature != 0).any()):
        raise ValueError("temperature must be 0 for the top-N procedure (it is greedy)")
    batch, device = base_logits.shape[0], base_logits.device
    n = torch.as_tensor(top_n, device=device).long().reshape(-1).expand(batch)
    if batch and int(n.min()) < 1:
        raise ValueError(f"top_n must be >= 1, got {int(n.min())}")
    if guide_to_base is None and guide_logits.shape[-1] != base_logits.shape[-1]:
        raise ValueError(
            "guide_logits must have the base's vocabulary without guide_to_base, "
            f"got {guide_logits.shape[-1]} and {base_logits.shape[-1]} columns"
        )
    if batch == 0:
        empty = base_logits.new_empty((0,), dtype=torch.float32)
        return BlendStepResult(
            torch.empty(0, dtype=torch.int64, device=device),
            torch.empty(0, dtype=torch.bool, device=device),
            *[empty] * 4,
        )
    k = int(n.max())
    p_b, ids_b = _top(base_logits, k, n)
    p_g, guide_ids = _top(guide_logits.to(device), k, n)
    ids_g = (
        guide_ids
        if guide_to_base is None
        else guide_to_base.guide_to_base.to(device).long()[guide_ids]
    )
    p_g_mapped = p_g.masked_fill(ids_g < 0, 0.0)  # no base spelling: never a candidate

    c_b, c_g = p_b[:, 0], p_g[:, 0]
    favourite = ids_g[:, :1]  # -1 when it has no base twin
    agree = (p_b * (ids_b == favourite)).sum(-1)  # 0 when not in the base's list
    gamma = _per_row(args.gamma_tensor, args.gamma_value, batch, device)
    alpha = _per_row(args.alpha_tensor, args.alpha_value, batch, device)
    auto = (c_g / (c_b + c_g) + args.agree_bonus * agree).clamp(0.0, 1.0)
    intervened = c_b < gamma
    a = torch.where(alpha < 0, auto, alpha) * intervened

    ids = torch.cat([ids_b, ids_g], -1)
    weights = torch.cat([(1 - a)[:, None] * p_b, a[:, None] * p_g_mapped], -1)
    best, tokens = _union_argmax(ids, weights, base_logits.shape[-1])
    # a = 1 with no guide string spelled in the base: nothing to emit but
    # the base's own favourite
    tokens = torch.where(best > 0, tokens, ids_b[:, 0])

    bad = _bad_rows(base_logits, guide_logits.to(device))
    nan = torch.tensor(float("nan"), device=device)
    return BlendStepResult(
        tokens.masked_fill(bad, -1),
        intervened & ~bad,
        torch.where(bad, nan, a),
        torch.where(bad, nan, c_b),
        torch.where(bad, nan, c_g),
        torch.where(bad, nan, agree),
    )


@dataclass(frozen=True)
class TopNRows:
    """The rows of a batch that run the top-N procedure, and their N; the
    others keep the op's result."""

    index: torch.Tensor  # (R,) int64 batch positions
    n: torch.Tensor  # (R,) int64 list lengths
    batch: int  # B, the whole batch's size

    @classmethod
    def of(cls, top_n: Sequence[int], device=None) -> Optional["TopNRows"]:
        """From one N per batch row (0: the exact op); None when no row asks."""
        rows = [i for i, n in enumerate(top_n) if n > 0]
        if not rows:
            return None
        return cls(
            torch.tensor(rows, dtype=torch.long, device=device),
            torch.tensor([top_n[i] for i in rows], dtype=torch.long, device=device),
            len(top_n),
        )

    def apply(
        self,
        out: BlendStepResult,
        base_logits: torch.Tensor,
        guide_logits: torch.Tensor,
        guide_to_base: Optional[GuideMap],
        args: StepArgs,
    ) -> BlendStepResult:
        """`out` (the op's result for the batch) with these rows replaced by
        the top-N step on the same logits and arguments."""
        if self.index.numel() == self.batch:
            return top_n_step(base_logits, guide_logits, guide_to_base, args, self.n)
        index = self.index.to(base_logits.device)
        sub = top_n_step(
            base_logits.index_select(0, index),
            guide_logits.index_select(0, index.to(guide_logits.device)),
            guide_to_base,
            args.take(index, self.batch),
            self.n,
        )
        return BlendStepResult(
            *(full.index_put((index,), part.to(full.dtype)) for full, part in zip(out, sub))
        )


@dataclass(frozen=True)
class ListStep:
    """One step of the rule on string lists."""

    token: str  # the chosen string
    intervened: bool  # c_b < gamma (only then is the guide's list needed)
    alpha: float  # the weight used, 0 without intervention
    agree: float  # p_base(guide's favourite), 0 when not in the base's list
    q: dict  # the mixture over the candidate strings


def blend_lists(
    base: Mapping[str, float],
    guide: Optional[Mapping[str, float]],
    *,
    gamma: float = 0.4,
    alpha: Union[str, float] = "auto",
    agree_bonus: float = 0.1,
    can_emit: Optional[Callable[[str], bool]] = None,
) -> ListStep:
    """The published step on two top-N lists of {string: probability}
    (full-softmax probabilities). `guide` may be None where the base is
    sure (c_b >= gamma). can_emit: which strings may be chosen (default:
    any); ties go to the first string, the base's list first."""
    c_b = max(base.values())
    if not c_b < gamma:
        return ListStep(max(base, key=base.get), False, 0.0, 0.0, dict(base))
    if not guide:
        raise ValueError("the base is unsure (c_b < gamma): the guide's list is needed")
    c_g = max(guide.values())
    agree = base.get(max(guide, key=guide.get), 0.0)
    a = (
        min(max(c_g / (c_b + c_g) + agree_bonus * agree, 0.0), 1.0)
        if alpha == "auto"
        else float(alpha)
    )
    union = list(base) + [s for s in guide if s not in base]
    q = {
        s: a * guide.get(s, 0.0) + (1 - a) * base.get(s, 0.0)
        for s in union
        if can_emit is None or can_emit(s)
    }
    if not q or max(q.values()) <= 0:  # see top_n_step: the base's favourite
        return ListStep(max(base, key=base.get), True, a, agree, q)
    return ListStep(max(q, key=q.get), True, a, agree, q)
