"""The engine-independent core of the plug-in: the blended requests of a
continuous batch, their guide rows, and one BlendIn step over the logits.

vLLM's adapters (processor.py) translate its batch updates into `update`
and call `apply` on the logits of each step. Everything else is the decode
loop's own machinery: the guide stream (blendin_ext.guides, rows joining and
leaving through SyncedGuide), the vocabulary map, the per-row arguments
(RowParams) and the fused op (run_step).

One step: the op runs on the base logits alone (`run_base_step`: exact for
every row that does not intervene, a = 0, and it says which rows do); then,
for the rows that intervene (lazy; eager: every row with a guide), the
guide catches up in one batched forward and the op runs again on them with
the real guide logits. Each blended row of the logits then
keeps one finite entry, 0 at the op's token, so that vLLM's greedy argmax
and its sampler (temperature, top-k, top-p, min-p, penalties) all pick it.
"""
from __future__ import annotations

import random
import time
import weakref
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from blendin_ext.decode.loop import HostStep, fit_vocab
from blendin_ext.decode.options import DecodeOptions, RowParams
from blendin_ext.guides.synced import SyncedGuide
from blendin_ext.ops.args import BlendStepResult
from blendin_ext.ops.fused import run_base_step, run_step
from blendin_ext.ops.strategies import StrategyChoice
from blendin_ext.vllm.config import EngineConfig, RequestConfig
from blendin_ext.vllm.diagnostics import DiagnosticsLog, RequestDiagnostics, external_id


@dataclass
class Sampling:
    """The request's own sampling settings, which the op applies per model."""

    temperature: float
    top_k: Optional[int]
    top_p: Optional[float]
    seed: int

    @classmethod
    def of(cls, temperature: float, top_k: Optional[int], top_p: Optional[float],
           seed: Optional[int]) -> "Sampling":
        """vLLM's conventions: top_k <= 0 and top_p 1 mean no filter; no
        seed means a fresh random one (not reproducible, as in vLLM)."""
        return cls(float(temperature), top_k if top_k and top_k > 0 else None,
                   top_p if top_p is not None and top_p < 1 else None,
                   random.getrandbits(63) if seed is None else int(seed))


@dataclass(eq=False)
class BlendRequest:
    """One blended request in the batch. `output_ids` is the engine's own
    list of the request's generated tokens, read by reference."""

    key: Optional[str]
    choice: StrategyChoice
    agree_bonus: float
    sampling: Sampling
    prompt_ids: List[int]
    output_ids: List[int]
    diagnostics: Optional[RequestDiagnostics] = None

    @property
    def uses_guide(self) -> bool:
        return self.choice.gamma > 0


_CORES: "weakref.WeakSet[BlendCore]" = weakref.WeakSet()


def engine_stats() -> list:
    """`BlendCore.stats()` of every core in this process (benchmarks)."""
    return [core.stats() for core in list(_CORES)]


class BlendCore:
    """Blended requests by batch index, the guide's rows, one step per call."""

    def __init__(self, config: EngineConfig, guide: SyncedGuide, base_tokenizer,
                 capacity: int = 256):
        self.config = config
        self.guide = guide
        self.base_tokenizer = base_tokenizer
        self.slots: Dict[int, BlendRequest] = {}
        self.guide_rows: List[BlendRequest] = []   # the guide stream's rows, in order
        self.log = DiagnosticsLog(config.diagnostics)
        self.history: Dict[str, RequestDiagnostics] = {}  # kept across preemption
        self.steps = 0           # apply calls with blended rows
        self.blended_rows = 0    # rows over those steps
        self.guide_runs = 0      # (step, agree-bonus group) pairs with a guide forward
        self.guide_rows_fed = 0  # rows that needed the guide, over all steps
        self.apply_seconds = 0.0
        self.guide.time_forwards = True
        _CORES.add(self)
        self.guide.start([], capacity)
        self._params: Optional[Tuple[list, Dict[float, tuple]]] = None
        self._params_layout: Optional[tuple] = None   # the `positions` _params was built for
        self._unnamed = 0
        self._guide_row: Dict[int, int] = {}   # id(request) -> its guide row

    # ------------------------------------------------------------ requests
    def new_request(self, request: RequestConfig, sampling: Sampling, prompt_ids: Sequence[int],
                    output_ids: List[int]) -> BlendRequest:
        choice, bonus = request.resolve(self.config)
        return BlendRequest(None, choice, bonus, sampling, list(prompt_ids), output_ids)

    def update(self, removed: Sequence[int], added: Sequence[Tuple[int, Optional[BlendRequest]]],
               moved: Sequence[Tuple[int, int, bool]],
               request_ids: Optional[Sequence[str]] = None) -> None:
        """A batch update in vLLM's order: removed, added, moved (swap=True
        exchanges two rows, else a moves to b). request_ids: the batch's ids
        by index after the update, to key diagnostics (None: made up)."""
        leaving = [self.slots.pop(index, None) for index in removed]
        for index, request in added:
            leaving.append(self.slots.pop(index, None))
            if request is not None:
                self.slots[index] = request
        self._leave([r for r in leaving if r is not None and r.diagnostics is not None])
        for a, b, swap in moved:
            first, second = self.slots.pop(a, None), self.slots.pop(b, None)
            if first is not None:
                self.slots[b] = first
            if second is not None and swap:
                self.slots[a] = second
        for index, request in self.slots.items():
            if request.key is None:
                self._name(request, request_ids[index] if request_ids else None)
        self._sync_guide_rows()
        self._params = None

    def _name(self, request: BlendRequest, key: Optional[str]) -> None:
        if key is None:
            self._unnamed += 1
            key = f"request-{self._unnamed}"
        request.key = key
        diag = self.history.get(key)   # a preempted request resumes its record
        if diag is None:
            diag = self.history[key] = RequestDiagnostics(external_id(key), request.choice.name)
        elif request.output_ids:
            diag.resumed += 1
        request.diagnostics = diag
        self.log.track(diag)

    def _leave(self, requests: List[BlendRequest]) -> None:
        """Requests that left the batch (finished or preempted): their
        guide statistics are read while the guide still holds their rows,
        then their summaries are logged."""
        self._save_guide_stats(requests)
        for request in requests:
            self.log.left(request.diagnostics)
            self.history.pop(request.key, None)
            self.history[request.key] = request.diagnostics
            while len(self.history) > 2 * len(self.slots) + 1024:   # preempted ones come back soon
                self.history.pop(next(iter(self.history)))

    def _save_guide_stats(self, requests: List[BlendRequest]) -> None:
        rows = [(r, self._guide_row[id(r)]) for r in requests if id(r) in self._guide_row]
        shares = getattr(self.guide, "twin_share_by_row", None)
        coverage = getattr(self.guide, "coverage_by_row", None)
        if not rows or shares is None or coverage is None:
            return      # a guide of the base's vocabulary feeds the base's own ids
        coverage = coverage()
        leaving_shares = shares([row for _, row in rows])   # syncs the leaving rows only
        for (request, row), share in zip(rows, leaving_shares):
            request.diagnostics.guide_twin_share = share
            request.diagnostics.map_coverage = coverage[row]

    def _sync_guide_rows(self) -> None:
        """Keeps the guide's rows in step with the batch: rows of requests
        that left are dropped, new requests get rows (fed lazily)."""
        wanted = [r for _, r in sorted(self.slots.items()) if r.uses_guide]
        present = {id(r) for r in wanted}
        keep = [i for i, r in enumerate(self.guide_rows) if id(r) in present]
        if len(keep) != len(self.guide_rows):
            self.guide.keep_rows(keep)
            self.guide_rows = [self.guide_rows[i] for i in keep]
        held = {id(r) for r in self.guide_rows}
        new = [r for r in wanted if id(r) not in held]
        if new:
            texts = [self.base_tokenizer.decode(r.prompt_ids, skip_special_tokens=True)
                     for r in new]
            same_prompt = None if self.guide.chat else [r.prompt_ids for r in new]
            self.guide.add_rows(texts, base_ids=[r.output_ids for r in new],
                                prompt_ids=same_prompt if self.guide.guide_to_base is None
                                else None)
            self.guide_rows.extend(new)
        self._guide_row = {id(r): i for i, r in enumerate(self.guide_rows)}

    # ----------------------------------------------------------------- step
    @torch.inference_mode()
    def apply(self, logits: torch.Tensor,
              positions: Optional[Dict[int, int]] = None) -> torch.Tensor:
        """One step. positions: batch index -> logits row, for runners that
        reorder rows every step (Model Runner V2; indices absent from it sit
        the step out); None: the index is the row (the V1 persistent batch)."""
        if not self.slots:
            return logits
        started = time.perf_counter()
        indices, groups = self._step_params(logits.device, positions)
        if not indices:
            return logits
        self.steps += 1
        self.blended_rows += len(indices)
        for group in groups.values():
            self._apply_group(logits, group)
        self.apply_seconds += time.perf_counter() - started
        return logits

    def stats(self) -> dict:
        """Counters since the engine started (guide_seconds: its forwards)."""
        return {"steps": self.steps, "blended_rows": self.blended_rows,
                "guide_runs": self.guide_runs, "guide_rows_fed": self.guide_rows_fed,
                "guide_forwards": self.guide.forwards, "guide_tokens": self.guide.tokens_fed,
                "guide_seconds": self.guide.forward_seconds, "apply_seconds": self.apply_seconds,
                "rebuilds": getattr(self.guide, "rebuilds", 0)}

    def _step_params(self, device, positions: Optional[Dict[int, int]] = None
                     ) -> Tuple[list, Dict[float, "StepGroup"]]:
        """Per agree-bonus group (the op takes one bonus per call): logits
        rows, requests and RowParams; rebuilt only when the batch or the
        layout changes."""
        layout = None if positions is None else tuple(sorted(positions.items()))
        if self._params is None or layout != self._params_layout:
            indices = sorted(i for i in self.slots if positions is None or i in positions)
            groups: Dict[float, list] = {}
            for index in indices:
                groups.setdefault(self.slots[index].agree_bonus, []).append(index)
            built = {}
            for bonus, members in groups.items():
                requests = [self.slots[i] for i in members]
                rows = members if positions is None else [positions[i] for i in members]
                options = DecodeOptions(
                    max_new_tokens=0, strategy=None, agree_bonus=bonus,
                    gamma=[r.choice.gamma for r in requests],
                    alpha=[r.choice.alpha for r in requests],
                    temperature=[r.sampling.temperature for r in requests],
                    top_k=[r.sampling.top_k for r in requests],
                    top_p=[r.sampling.top_p for r in requests],
                    seed=[r.sampling.seed for r in requests])
                built[bonus] = StepGroup(torch.tensor(rows, dtype=torch.long, device=device),
                                         row_window(rows), requests,
                                         RowParams.build(len(rows), device, options))
            self._params, self._params_layout = (indices, built), layout
        return self._params

    def _apply_group(self, logits: torch.Tensor, group: "StepGroup") -> None:
        requests = group.requests
        offsets = torch.tensor([len(r.output_ids) for r in requests], dtype=torch.long,
                               device=logits.device)
        args = group.params.args._replace(offset_tensor=offsets, offset_value=0)
        base = group.rows_of(logits)
        first = run_base_step(base, args)
        intervened = first.intervened.tolist()
        need = [j for j, r in enumerate(requests)
                if r.uses_guide and (intervened[j] or not self.config.lazy)]
        out, base_top, guide_top = first, None, None
        if need:
            out, base_top, guide_top = self._with_guide(base, requests, args, first, need)
        self._emit(logits, group, out, base_top, guide_top)

    def _with_guide(self, base, requests, args, first: BlendStepResult, need: List[int]):
        """The op again for rows `need`, with the guide's logits (one
        batched guide forward for exactly the rows that need it)."""
        n = len(requests)
        guide_rows = [self._guide_row[id(requests[j])] for j in need]
        guide_logits = self.guide.logits(rows=guide_rows)
        self.guide_runs += 1
        self.guide_rows_fed += len(need)
        every = len(need) == n   # eager, or every row unsure: no copies
        pick = torch.tensor(need, dtype=torch.long, device=base.device)
        sub_base = base if every else base.index_select(0, pick)
        sub_guide = guide_logits.index_select(
            0, torch.tensor(guide_rows, dtype=torch.long, device=guide_logits.device))
        maps = self.guide.guide_to_base
        if maps is None and sub_guide.shape[-1] != sub_base.shape[-1]:
            sub_guide = fit_vocab(sub_guide, sub_base.shape[-1])
        sub_guide = sub_guide.to(sub_base.device, torch.float32)
        sub = run_step(sub_base, sub_guide, maps, args if every else args.take(pick, n))
        merged = sub if every else BlendStepResult(
            *(full.index_put((pick,), part) for full, part in zip(first, sub)))
        base_top = torch.full((n,), -1, dtype=torch.long, device=base.device)
        guide_top = torch.full((n,), -1, dtype=torch.long, device=base.device)
        # greedy, the first call's tokens (a = 0) are the base's argmax
        base_top[pick] = first.tokens[pick] if args.greedy else sub_base.argmax(-1)
        guide_top[pick] = self.guide.top_base_token(sub_guide).to(base.device).long()
        return merged, base_top, guide_top

    def _emit(self, logits, group: "StepGroup", out: BlendStepResult, base_top,
              guide_top) -> None:
        """Writes the op's tokens into the logits and records diagnostics
        (one host transfer for everything, as in the decode loop)."""
        requests = group.requests
        host = HostStep.fetch(out, base_top, guide_top)
        good = [j for j, t in enumerate(host.tokens) if t >= 0]
        for j in set(range(len(requests))) - set(good):
            requests[j].diagnostics.bad_steps += 1   # NaN/+inf logits: left to vLLM
        if len(good) == len(requests) and group.window is not None:
            rows = logits[group.window]   # in place, no index tensors
            rows.fill_(float("-inf"))
            rows.scatter_(1, out.tokens.to(logits.device)[:, None], 0.0)
        elif good:
            keep = group.rows[good]
            logits.index_fill_(0, keep, float("-inf"))
            logits[keep, out.tokens[good].to(logits.device)] = 0.0
        for j in good:
            requests[j].diagnostics.record(len(requests[j].output_ids), (
                host.tokens[j], host.base_confidence[j], host.intervened[j], host.alpha[j],
                host.agree[j], host.base_top[j], host.guide_top[j]))


@dataclass
class StepGroup:
    """The requests of one op call (one agree bonus) and their logits rows."""

    rows: torch.Tensor        # (n,) logits row of each request
    window: Optional[slice]   # the same rows as a slice, when they are consecutive
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
