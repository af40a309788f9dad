"""The state of one decode call and the batch's shape over it.

`DecodeRun` holds everything one `generate` / `stream` call changes: its
own streams over the generator's models, per-row parameters and
bookkeeping; `DecodeRun.create` checks a call's arguments and builds it.
`compact` drops finished rows from the batch between steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, FrozenSet, List, Optional, Sequence, Union

import torch

from blendin_ext.decode.diagnostics import LoopStats, SequenceDiagnostics
from blendin_ext.decode.options import DecodeOptions, RowParams
from blendin_ext.decode.text import RowText
from blendin_ext.guides.stream import GuideStream, guide_row_stats
from blendin_ext.models.streams import TokenStream
from blendin_ext.ops.args import BlendStepResult

Prompts = Union[str, Sequence[str]]

# Called after every step with its tokens (all rows) and which rows were live
# before it; returns per row whether it stops now (finish reason "stop"), or
# None. Adapters use it for their own stop rules (transformers' criteria).
StepHook = Callable[[List[int], List[bool]], Optional[List[bool]]]


@dataclass
class HostStep:
    """One step's outputs on the host, plus the device tokens to feed back."""

    tokens_device: torch.Tensor
    tokens: List[int]
    intervened: List[bool]
    alpha: List[float]
    agree: List[float]
    base_confidence: List[float]
    base_top: List[int]  # base argmax per row (-1 when the guide did not run)
    guide_top: List[int]  # guide argmax in base ids (-1 when the guide did not run)

    @classmethod
    def fetch(cls, out: BlendStepResult, base_top=None, guide_top=None) -> "HostStep":
        """One device->host transfer for everything the host needs."""
        fields = [out.tokens, out.intervened, out.alpha, out.agree, out.base_top_prob]
        if base_top is not None:
            fields += [base_top, guide_top]
        host = torch.stack([f.to(torch.float64) for f in fields]).tolist()
        tokens = [int(t) for t in host[0]]
        tops = [[int(t) for t in row] for row in host[5:]] or [[-1] * len(tokens)] * 2
        return cls(out.tokens, tokens, [v != 0 for v in host[1]], host[2], host[3], host[4], *tops)

    def select(self, index: List[int]) -> "HostStep":
        """Rows `index` only (what the next step feeds after a compaction)."""
        rows = torch.tensor(index, dtype=torch.long, device=self.tokens_device.device)

        def pick(values):
            return [values[i] for i in index]

        return HostStep(
            self.tokens_device.index_select(0, rows),
            pick(self.tokens),
            pick(self.intervened),
            pick(self.alpha),
            pick(self.agree),
            pick(self.base_confidence),
            pick(self.base_top),
            pick(self.guide_top),
        )


@dataclass(kw_only=True)
class DecodeRun:
    """State of one call: its own streams over the generator's models, the
    options, per-row bookkeeping and counters. Nothing of a call lives on
    the generator, so calls may interleave.

    Rows are prompts. The batch holds the live ones only once finished rows
    leave (`compact`): batch position i is prompt `rows[i]`, and `live`,
    `params` and both streams follow the batch; texts, diagnostics and
    finish reasons stay per prompt."""

    prompts: List[str]
    base: TokenStream
    guide: GuideStream
    params: RowParams
    max_new_tokens: int
    lazy: bool
    compact: bool
    stop_strings: tuple
    stop_ids: FrozenSet[int]
    texts: List[RowText]
    diagnostics: List[SequenceDiagnostics]
    rows: List[int]
    live: List[bool]
    finish: List[Optional[str]]
    needs_text: bool
    coverage: List[Optional[float]]  # map coverage of rows that left
    prompt_ids: Optional[List[List[int]]] = None  # the base's prompt ids, when given
    step_hook: Optional[StepHook] = None
    stats: LoopStats = field(default_factory=LoopStats)
    previous: Optional[HostStep] = None

    @classmethod
    def create(
        cls,
        prompts: Prompts,
        options: DecodeOptions,
        *,
        base: TokenStream,
        guide: GuideStream,
        tokenizer,
        stop_ids: FrozenSet[int],
        text_deltas: bool,
        prompt_ids: Optional[Sequence[Sequence[int]]] = None,
        step_hook: Optional[StepHook] = None,
    ) -> "DecodeRun":
        """A call's run after checking its prompts (a string or a non-empty
        list of them) and prompt ids: fresh streams over `base` and
        `guide`, per-row parameters, empty texts and diagnostics.
        text_deltas: the caller wants each token's text as it comes."""
        prompts = [prompts] if isinstance(prompts, str) else prompts
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise ValueError("prompts must be a non-empty list of strings")
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"prompts[{i}] must be a string, got {type(p).__name__}")
        n = len(prompts)
        if prompt_ids is not None:
            prompt_ids = [[int(t) for t in ids] for ids in prompt_ids]
            if len(prompt_ids) != n or any(not ids for ids in prompt_ids):
                raise ValueError(f"prompt_ids must hold one non-empty id list per prompt ({n})")
        params = RowParams.build(n, base.device, options)
        guide = guide.for_call()
        guide.guide_sync = options.guide_sync
        stops = options.stop_strings
        return cls(
            prompts=list(prompts),
            base=base.fresh(),
            guide=guide,
            params=params,
            max_new_tokens=options.max_new_tokens,
            lazy=bool(options.lazy),
            compact=bool(options.compact),
            stop_strings=stops,
            stop_ids=stop_ids,
            texts=[RowText(tokenizer, stops) for _ in prompts],
            diagnostics=[SequenceDiagnostics() for _ in prompts],
            rows=list(range(n)),
            live=[True] * n,
            finish=[None] * n,
            needs_text=text_deltas or bool(stops),
            coverage=[None] * n,
            prompt_ids=prompt_ids,
            step_hook=step_hook,
        )


def save_guide_stats(run: DecodeRun, positions) -> None:
    """Copies the guide's statistics of batch `positions` to their prompts
    (before they leave the batch, or at the end): the map coverage and the
    share of guide ids fed as twins of the chosen tokens."""
    positions = list(positions)
    for pos, stats in zip(positions, guide_row_stats(run.guide, positions)):
        row = run.rows[pos]
        run.coverage[row] = stats.map_coverage
        run.diagnostics[row].guide_twin_share = stats.twin_share


def compact(run: DecodeRun) -> None:
    """Drops the finished rows from the batch: both streams (caches, masks,
    pending tokens), the op's per-row arguments and the step to feed.
    Seeds are per row and the RNG offset is the step, so no draw changes.
    A stream that cannot drop rows (a callable model, a static cache) turns
    compaction off for the rest of the call."""
    if not (run.base.can_keep_rows() and run.guide.can_keep_rows()):
        run.compact = False
        return
    keep = [pos for pos, alive in enumerate(run.live) if alive]
    save_guide_stats(run, [pos for pos, alive in enumerate(run.live) if not alive])
    run.base.keep_rows(keep)
    run.guide.keep_rows(keep)
    run.params = run.params.select(keep)
    run.previous = run.previous.select(keep)
    run.rows = [run.rows[pos] for pos in keep]
    run.live = [True] * len(keep)
