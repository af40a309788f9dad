"""The guide's rows, one per blended request that uses the guide, kept in
step with the engine's batch.

Rows join and leave between steps through `SyncedGuide.add_rows` /
`keep_rows`, which edit the guide's KV cache in place (or rebuild it from
the rows' ids). A row is described by its guide prompt and the request's
own token list (read by reference), so a request that comes back after
preemption, or whose draft tokens were rejected, just feeds what the
guide lacks (the guide rolls back to the common prefix).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch

from blendin_ext.guides.stream import guide_row_stats
from blendin_ext.guides.synced import SyncedGuide
from blendin_ext.vllm.requests import BlendRequest


class GuideRows:
    """The guide stream's rows, in the order requests joined."""

    def __init__(
        self, guide: SyncedGuide, base_tokenizer, capacity: int, cache_bytes_per_token: int = 0
    ):
        self.guide = guide
        self.base_tokenizer = base_tokenizer
        self.requests: List[BlendRequest] = []
        self._row: Dict[int, int] = {}  # id(request) -> its row
        self.cache_bytes_per_token = cache_bytes_per_token
        self.peak_cache_bytes = 0
        guide.start([], capacity)

    def row(self, request: BlendRequest) -> int:
        return self._row[id(request)]

    def holds(self, request: BlendRequest) -> bool:
        return id(request) in self._row

    def sync(self, wanted: Sequence[BlendRequest]) -> None:
        """Rows for exactly `wanted` (those that use the guide): rows of
        requests that left are dropped, new requests get rows (fed lazily)."""
        wanted = [r for r in wanted if r.uses_guide]
        present = {id(r) for r in wanted}
        keep = [i for i, r in enumerate(self.requests) if id(r) in present]
        if len(keep) != len(self.requests):
            self.guide.keep_rows(keep)
            self.requests = [self.requests[i] for i in keep]
        held = {id(r) for r in self.requests}
        new = [r for r in wanted if id(r) not in held]
        if new:
            texts = [
                self.base_tokenizer.decode(r.prompt_ids, skip_special_tokens=True) for r in new
            ]
            # The base's own prompt ids, when the guide shares its vocabulary
            # and takes prompts as they are (no chat template).
            same_prompt = (
                None
                if self.guide.chat or self.guide.guide_to_base is not None
                else [r.prompt_ids for r in new]
            )
            self.guide.add_rows(texts, base_ids=[r.tokens for r in new], prompt_ids=same_prompt)
            self.requests.extend(new)
        self._row = {id(r): i for i, r in enumerate(self.requests)}

    def logits(self, requests: Sequence[BlendRequest]) -> Tuple[List[int], torch.Tensor]:
        """(their rows, the guide's logits of every row), after one batched
        forward that brings exactly these requests' rows up to date."""
        rows = [self.row(r) for r in requests]
        logits = self.guide.logits(rows=rows)
        held = len(self.requests) * self.guide.stream.length * self.cache_bytes_per_token
        self.peak_cache_bytes = max(self.peak_cache_bytes, held)
        return rows, logits

    def save_stats(self, leaving: Sequence[BlendRequest]) -> None:
        """A cross-tokenizer guide's view of requests about to leave (their
        twin share and map coverage), read while it still holds their rows."""
        held = [r for r in leaving if self.holds(r)]
        # syncs these rows only; None for a guide of the base's own vocabulary
        for request, stats in zip(held, guide_row_stats(self.guide, [self.row(r) for r in held])):
            request.diagnostics.guide_twin_share = stats.twin_share
            request.diagnostics.map_coverage = stats.map_coverage
