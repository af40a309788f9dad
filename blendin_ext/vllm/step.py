"""One BlendIn step over a batch's logits rows.

The op runs on the base logits alone first (`run_base_step`: exact for
every row that does not intervene, a = 0, and it says which rows do);
then, for the rows that intervene (lazy; eager: every row with a guide),
the guide catches up in one batched forward and the op runs again on them
with the real guide logits. Each decided row of the logits then keeps one
finite entry, 0 at the op's token, so that vLLM's greedy argmax and its
sampler (temperature, top-k, top-p, min-p, penalties) all pick it.

Tokens the engine has already masked (-inf: a grammar, bad words, allowed
token ids) stay impossible: the guide's logits are masked alike before
the op mixes them in, and a row whose token would still be a masked one
is left to vLLM untouched (counted as a bad step), so the plug-in never
raises a -inf entry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from blendin_ext.decode.loop import HostStep
from blendin_ext.decode.options import DecodeOptions, RowParams
from blendin_ext.guides.stream import pair_logits
from blendin_ext.ops.args import BlendStepResult
from blendin_ext.ops.fused import run_base_step, run_step
from blendin_ext.ops.top_n import TopNRows
from blendin_ext.vllm.guide_rows import GuideRows
from blendin_ext.vllm.requests import BlendRequest


@dataclass
class StepGroup:
    """The requests of one op call (one agree bonus) and their logits rows."""

    rows: torch.Tensor  # (n,) logits row of each request
    window: Optional[slice]  # the same rows as a slice, when they are consecutive
    requests: List[BlendRequest]
    params: RowParams

    def rows_of(self, logits: torch.Tensor) -> torch.Tensor:
        """The group's logits: a view when the rows are consecutive (the
        usual V1 batch), else a copy. A fresh 32 x 262144 float32 copy costs
        ~20 ms here, as the allocator maps new pages for it each step."""
        return logits[self.window] if self.window is not None else logits.index_select(0, self.rows)


def row_window(rows: List[int]) -> Optional[slice]:
    """`rows` as a slice when they are consecutive and ascending, else None."""
    if rows and rows == list(range(rows[0], rows[0] + len(rows))):
        return slice(rows[0], rows[0] + len(rows))
    return None


@dataclass
class StepCounters:
    steps: int = 0  # run calls with decided rows
    blended_rows: int = 0  # rows over those steps
    guide_runs: int = 0  # (step, agree-bonus group) pairs with a guide forward
    guide_rows_fed: int = 0  # rows that needed the guide, over all steps
    apply_seconds: float = 0.0


def mask_like_base(guide: torch.Tensor, base: torch.Tensor, guide_to_base) -> torch.Tensor:
    """The guide's logits with -inf wherever the base's token is masked
    (-inf), through the vocabulary map for a guide of another tokenizer."""
    masked = torch.isneginf(base)
    if guide_to_base is None:
        return guide.masked_fill(masked[:, : guide.shape[-1]], float("-inf"))
    g2b = guide_to_base.guide_to_base.to(base.device).long()
    hit = masked.index_select(1, g2b.clamp(min=0)) & (g2b >= 0)
    return guide.masked_fill(hit, float("-inf"))


class BlendStep:
    """Runs the op for a batch of (logits row, request) pairs."""

    def __init__(self, guide_rows: GuideRows, lazy: bool):
        self.guide_rows = guide_rows
        self.guide = guide_rows.guide
        self.lazy = lazy
        self.counters = StepCounters()
        self._groups: Dict[float, StepGroup] = {}
        self._layout: Optional[tuple] = None

    @torch.inference_mode()
    def run(self, logits: torch.Tensor, members: Sequence[Tuple[int, BlendRequest]]) -> None:
        """Decides the token of each member's logits row, in place."""
        if not members:
            return
        started = time.perf_counter()
        self.counters.steps += 1
        self.counters.blended_rows += len(members)
        for group in self._plan(logits.device, members).values():
            self._run_group(logits, group)
        self.counters.apply_seconds += time.perf_counter() - started

    def _plan(self, device, members) -> Dict[float, StepGroup]:
        """Per agree-bonus group (the op takes one bonus per call): logits
        rows, requests and RowParams; rebuilt only when the layout changes."""
        layout = tuple((row, id(request)) for row, request in members)
        if layout == self._layout:
            return self._groups
        by_bonus: Dict[float, list] = {}
        for row, request in sorted(members, key=lambda m: m[0]):
            by_bonus.setdefault(request.agree_bonus, []).append((row, request))
        groups = {}
        for bonus, pairs in by_bonus.items():
            rows = [row for row, _ in pairs]
            requests = [request for _, request in pairs]
            options = DecodeOptions(
                max_new_tokens=0,
                strategy=None,
                agree_bonus=bonus,
                gamma=[r.choice.gamma for r in requests],
                alpha=[r.choice.alpha for r in requests],
                temperature=[r.sampling.temperature for r in requests],
                top_k=[r.sampling.top_k for r in requests],
                top_p=[r.sampling.top_p for r in requests],
                seed=[r.sampling.seed for r in requests],
            )
            groups[bonus] = StepGroup(
                torch.tensor(rows, dtype=torch.long, device=device),
                row_window(rows),
                requests,
                RowParams.build(len(rows), device, options),
            )
        self._groups, self._layout = groups, layout
        return groups

    def _run_group(self, logits: torch.Tensor, group: StepGroup) -> None:
        requests = group.requests
        # The op's random stream: each request's seed at offset = its output
        # length, so draws depend neither on the batch nor on preemption.
        offsets = torch.tensor(
            [len(r.tokens) for r in requests], dtype=torch.long, device=logits.device
        )
        args = group.params.args._replace(offset_tensor=offsets, offset_value=0)
        base = group.rows_of(logits)
        first = run_base_step(base, args)
        intervened = first.intervened.tolist()
        need = [
            j for j, r in enumerate(requests) if r.uses_guide and (intervened[j] or not self.lazy)
        ]
        out, base_top, guide_top = first, None, None
        if need:
            out, base_top, guide_top = self._with_guide(base, requests, args, first, need)
        self._emit(logits, group, base, out, base_top, guide_top)

    def _with_guide(self, base, requests, args, first: BlendStepResult, need: List[int]):
        """The op again for rows `need`, with the guide's logits (one
        batched guide forward for exactly the rows that need it)."""
        n = len(requests)
        guide_rows, guide_logits = self.guide_rows.logits([requests[j] for j in need])
        self.counters.guide_runs += 1
        self.counters.guide_rows_fed += len(need)
        every = len(need) == n  # eager, or every row unsure: no copies
        pick = torch.tensor(need, dtype=torch.long, device=base.device)
        sub_base = base if every else base.index_select(0, pick)
        sub_guide = guide_logits.index_select(
            0, torch.tensor(guide_rows, dtype=torch.long, device=guide_logits.device)
        )
        maps = self.guide.guide_to_base
        sub_base, sub_guide = pair_logits(sub_base, sub_guide, maps)
        sub_guide = mask_like_base(sub_guide, sub_base, maps)
        sub_args = args if every else args.take(pick, n)
        sub = run_step(sub_base, sub_guide, maps, sub_args)
        # rows of the paper's top-N procedure (blendin-topN) take its token
        # instead; rows that kept the base's token need no guide for it either
        top_n = TopNRows.of([requests[j].choice.top_n for j in need], sub_base.device)
        if top_n is not None:
            sub = top_n.apply(sub, sub_base, sub_guide, maps, sub_args)
        merged = (
            sub
            if every
            else BlendStepResult(*(full.index_put((pick,), part) for full, part in zip(first, sub)))
        )
        base_top = torch.full((n,), -1, dtype=torch.long, device=base.device)
        guide_top = torch.full((n,), -1, dtype=torch.long, device=base.device)
        # greedy, the first call's tokens (a = 0) are the base's argmax
        base_top[pick] = first.tokens[pick] if args.greedy else sub_base.argmax(-1)
        guide_top[pick] = self.guide.top_base_token(sub_guide).to(base.device).long()
        return merged, base_top, guide_top

    def _emit(
        self,
        logits,
        group: StepGroup,
        base: torch.Tensor,
        out: BlendStepResult,
        base_top,
        guide_top,
    ) -> None:
        """Writes the op's tokens into the logits and records diagnostics
        (one host transfer for everything, as in the decode loop). A token
        the engine had masked marks its row bad: left to vLLM."""
        requests = group.requests
        tokens = out.tokens.to(base.device).long()
        allowed = base.gather(1, tokens.clamp(min=0)[:, None])[:, 0] > float("-inf")
        out = out._replace(tokens=torch.where(allowed, tokens, -1))
        host = HostStep.fetch(out, base_top, guide_top)
        good = [j for j, t in enumerate(host.tokens) if t >= 0]
        for j in set(range(len(requests))) - set(good):
            requests[j].diagnostics.bad_steps += 1  # NaN/+inf or masked: left to vLLM
        if len(good) == len(requests) and group.window is not None:
            rows = logits[group.window]  # in place, no index tensors
            rows.fill_(float("-inf"))
            rows.scatter_(1, out.tokens.to(logits.device)[:, None], 0.0)
        elif good:
            keep = group.rows[good]
            logits.index_fill_(0, keep, float("-inf"))
            logits[keep, out.tokens[good].to(logits.device)] = 0.0
        for j in good:
            request, position = requests[j], len(requests[j].tokens)
            request.remember(position, host.tokens[j])
            request.diagnostics.record(
                position,
                (
                    host.tokens[j],
                    host.base_confidence[j],
                    host.intervened[j],
                    host.alpha[j],
                    host.agree[j],
                    host.base_top[j],
                    host.guide_top[j],
                ),
            )
