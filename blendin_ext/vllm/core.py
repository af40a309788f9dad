"""The engine-independent core of the plug-in: the blended requests of a
continuous batch by index (V1: the persistent batch's index; Model Runner
V2: the request's slot), and one BlendIn step over the logits.

The runner adapters (runner_v1.py, runner_v2.py) translate what vLLM hands
a processor into `update` (requests leaving, joining, moving) and bring
each request's token list up to date before `apply`. The work is split:

- `GuideRows` (guide_rows.py): the guide stream's rows, one per request
  that uses the guide;
- `BlendStep` (step.py): the op over the step's rows, the guide's forward
  for the rows that need it, writing the decided tokens;
- `DiagnosticsBook` (diagnostics.py): request keys, records, the log;
- `StatsLog` (stats.py): the rank's counters, a line when the batch empties.

A request is *away* when it finished (its last token reached max_tokens or
a stop token) or, under V2, when a step left its slot out: its guide row is
released and its summary logged at once (the engine may not step again
soon). An away request that shows up in a later step simply rejoins.
"""

from __future__ import annotations

from typing import Collection, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

import torch

from blendin_ext.guides.synced import SyncedGuide
from blendin_ext.vllm.config import EngineConfig
from blendin_ext.vllm.diagnostics import DiagnosticsBook
from blendin_ext.vllm.guide_rows import GuideRows
from blendin_ext.vllm.requests import BlendRequest
from blendin_ext.vllm.stats import EngineStats, StatsLog
from blendin_ext.vllm.step import BlendStep


class BlendCore:
    """Blended requests by batch index, the guide's rows, one step per call."""

    def __init__(
        self,
        config: EngineConfig,
        guide: SyncedGuide,
        base_tokenizer,
        *,
        capacity: int = 256,
        eos_ids: FrozenSet[int] = frozenset(),
        rank: int = 0,
        writes_diagnostics: bool = True,
        guide_param_bytes: int = 0,
        cache_bytes_per_token: int = 0,
    ):
        self.config = config
        self.eos_ids = eos_ids
        self.rank = rank
        self.guide_param_bytes = guide_param_bytes
        self.requests: Dict[int, BlendRequest] = {}
        self.away: Set[int] = set()  # indices whose request finished or sat a step out
        guide.time_forwards = True
        self.guide_rows = GuideRows(guide, base_tokenizer, capacity, cache_bytes_per_token)
        self.stepper = BlendStep(self.guide_rows, config.lazy)
        self.book = DiagnosticsBook(config.diagnostics if writes_diagnostics else None)
        self.stats_log = StatsLog(config.stats)
        self._stats_steps = 0  # steps when the stats line was last written

    # ------------------------------------------------------------ requests
    def update(
        self,
        removed: Sequence[int],
        added: Sequence[Tuple[int, Optional[BlendRequest]]],
        moved: Sequence[Tuple[int, int, bool]],
    ) -> None:
        """A batch update in vLLM's order: removed, added, moved (swap=True
        exchanges two rows, else a moves to b). An added index replaces
        whatever held it."""
        leaving = [self._pop(index) for index in removed]
        for index, request in added:
            leaving.append(self._pop(index))
            if request is not None:
                self.requests[index] = request
                request.diagnostics = self.book.join(
                    request.request_id, request.choice.name, request.prompt_ids, request.tokens
                )
        for a, b, swap in moved:
            first, second = self._pop_entry(a), self._pop_entry(b)
            if first is not None:
                self._put(b, first)
            if second is not None and swap:
                self._put(a, second)
        self._leave([r for r in leaving if r is not None])
        self.guide_rows.sync(self._active())
        self._maybe_write_stats()

    def _pop(self, index: int) -> Optional[BlendRequest]:
        self.away.discard(index)
        return self.requests.pop(index, None)

    def _pop_entry(self, index: int):
        if index not in self.requests:
            return None
        away = index in self.away
        self.away.discard(index)
        return self.requests.pop(index), away

    def _put(self, index: int, entry) -> None:
        request, away = entry
        self.requests[index] = request
        if away:
            self.away.add(index)

    def _active(self) -> List[BlendRequest]:
        return [r for i, r in sorted(self.requests.items()) if i not in self.away]

    def _leave(self, requests: List[BlendRequest]) -> None:
        """Requests that left the batch: their guide statistics are read
        while the guide still holds their rows, then they are logged."""
        self.guide_rows.save_stats(requests)
        for request in requests:
            self.book.leave(
                request.diagnostics, request.prompt_ids, request.tokens, write=not request.logged
            )

    def _set_away(self, indices: Sequence[int]) -> None:
        """Requests that finished or sat a step out: logged as they stand,
        their guide rows released."""
        requests = [self.requests[i] for i in indices]
        self.guide_rows.save_stats(requests)
        for index, request in zip(indices, requests):
            self.away.add(index)
            if not request.logged:
                self.book.log.left(request.diagnostics)
                request.logged = True

    def _return(self, indices: Sequence[int]) -> None:
        for index in indices:
            request = self.requests[index]
            self.away.discard(index)
            request.logged = False
            self.book.log.track(request.diagnostics)

    # ----------------------------------------------------------------- step
    def apply(self, logits: torch.Tensor, rows: Optional[Dict[int, int]] = None) -> torch.Tensor:
        """One step. rows: index -> logits row of the requests that take part
        (the others sit it out); None: every request takes part and its
        index is its row (the V1 persistent batch)."""
        if not self.requests:
            return logits
        rows = {i: i for i in self.requests} if rows is None else rows
        self.begin_step(rows)
        self.run(logits, rows)
        self.end_step(rows)
        return logits

    def begin_step(self, present: Collection[int]) -> None:
        """The step's requests: away ones among them rejoin, the others sit
        the step out (their guide rows are released)."""
        back = [i for i in present if i in self.away and i in self.requests]
        out = [i for i in self.requests if i not in present and i not in self.away]
        if back or out:
            self._return(back)
            self._set_away(out)
            self.guide_rows.sync(self._active())

    def run(self, logits: torch.Tensor, rows: Dict[int, int]) -> None:
        """Decides the rows of requests (index -> logits row) whose token
        lists are up to date; a step may run several (speculative decoding:
        one call per draft position)."""
        members = [(rows[i], self.requests[i]) for i in sorted(rows) if i in self.requests]
        self.stepper.run(logits, members)

    def end_step(self, present: Collection[int]) -> None:
        """After the step's last `run`: requests whose token ends them are
        logged and release their guide rows."""
        done = [
            i
            for i in sorted(present)
            if i in self.requests and i not in self.away and self._ends(self.requests[i])
        ]
        if done:
            self._set_away(done)
            self.guide_rows.sync(self._active())
        self._maybe_write_stats()

    def _ends(self, request: BlendRequest) -> bool:
        token = request.decided.get(len(request.tokens))
        return token is not None and request.ends_with(token)

    # ---------------------------------------------------------------- stats
    def stats(self) -> EngineStats:
        counters, guide = self.stepper.counters, self.guide_rows.guide
        return EngineStats(
            rank=self.rank,
            steps=counters.steps,
            blended_rows=counters.blended_rows,
            guide_runs=counters.guide_runs,
            guide_rows_fed=counters.guide_rows_fed,
            guide_forwards=guide.forwards,
            guide_tokens=guide.tokens_fed,
            guide_seconds=guide.forward_seconds,
            apply_seconds=counters.apply_seconds,
            rebuilds=guide.rebuilds,
            guide_param_bytes=self.guide_param_bytes,
            guide_cache_bytes=self.guide_rows.peak_cache_bytes,
        )

    def _maybe_write_stats(self) -> None:
        """A stats line when no blended request is left running and steps
        ran since the last line."""
        steps = self.stepper.counters.steps
        if steps != self._stats_steps and not self._active():
            self._stats_steps = steps
            self.stats_log.write(self.stats())
