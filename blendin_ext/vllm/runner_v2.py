"""BlendIn under vLLM's Model Runner V2 (``vllm.v1.worker.gpu``).

V2 talks to a logits processor differently from the V1 persistent batch:

- a request gets a *slot* (``add_request(slot, params)``), recycled through
  a free list; nothing says when a request leaves;
- the token history lives in the runner's per-slot buffers
  (``req_states.all_token_ids`` up to ``total_len``), not in lists handed
  to the processor;
- ``apply(logits, ctx)`` gets the step's layout: ``ctx.idx_mapping_np``
  maps each logits row to its slot, and rows are reordered every step.

`SlotRequests` turns that into what `BlendCore` already understands: the
core's batch index is the slot, a step passes ``positions`` (slot -> row),
a request's prompt and output ids are read from the runner's buffers, and
a slot whose request is no longer the runner's leaves the core. Request ids
(for diagnostics) and departures are read from the runner's own request
table when the runner exposes it (``req_states.index_to_req_id``), found
through the caller of ``add_request``; without it a request leaves when its
slot is given to another one.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from blendin_ext.vllm.config import RequestConfig
from blendin_ext.vllm.core import BlendCore, BlendRequest, Sampling

logger = logging.getLogger("blendin_ext.vllm")


@dataclass
class _Admitted:
    """A request seen by add_request whose ids are read at its first step
    (V2 writes the slot's tokens after add_request returns)."""

    request: RequestConfig
    sampling: Sampling
    request_id: Optional[str]


def _caller_request(max_depth: int = 5):
    """(request id, runner's request table) from the frames that called
    add_request: the runner's ``add_requests`` holds ``req_id`` and ``self``
    with ``req_states.index_to_req_id``. (None, None) where this vLLM does
    not call it that way."""
    frame = sys._getframe(2)
    for _ in range(max_depth):
        if frame is None:
            break
        table = getattr(getattr(frame.f_locals.get("self"), "req_states", None),
                        "index_to_req_id", None)
        request_id = frame.f_locals.get("req_id")
        if isinstance(request_id, str) and isinstance(table, dict):
            return request_id, table
        frame = frame.f_back
    return None, None


class SlotRequests:
    """The blended requests of a V2 runner, by slot, driving a `BlendCore`."""

    def __init__(self, core: BlendCore, req_states):
        self.core = core
        self.req_states = req_states            # LogitsProcRequestState (read-only)
        self.admitted: Dict[int, _Admitted] = {}
        self.outputs: Dict[int, List[int]] = {}  # slot -> the request's output ids
        self.prompt_lens: Dict[int, int] = {}
        self.table: Optional[dict] = None        # the runner's slot -> request id

    # ------------------------------------------------------------ requests
    def add(self, slot: int, params) -> bool:
        """A request enters `slot` (the slot's previous occupant has left)."""
        self._release([slot])
        request = RequestConfig.parse(params.extra_args)
        if request is None:
            self.admitted.pop(slot, None)
            return False
        request_id, table = _caller_request()
        self.table = table if table is not None else self.table
        self.admitted[slot] = _Admitted(
            request, Sampling.of(params.temperature, params.top_k, params.top_p, params.seed),
            request_id)
        return True

    def _release(self, slots) -> None:
        gone = [s for s in slots if s in self.core.slots]
        for slot in gone:
            self.outputs.pop(slot, None)
            self.prompt_lens.pop(slot, None)
        if gone:
            self.core.update(gone, [], [])

    def _departed(self) -> List[int]:
        """Slots whose request the runner no longer holds (finished,
        aborted or preempted); none known without the runner's table."""
        if self.table is None:
            return []
        return [slot for slot, request in self.core.slots.items()
                if self.table.get(slot) != request.key]

    # ----------------------------------------------------------------- step
    def apply(self, logits: torch.Tensor, ctx) -> torch.Tensor:
        slots = [int(s) for s in ctx.idx_mapping_np.tolist()]
        if logits.shape[0] != len(slots):
            raise RuntimeError("BlendIn: speculative decoding (several logits rows per "
                               "request) is not supported by the plug-in")
        self._release(self._departed())
        totals = self.req_states.total_len.gpu[ctx.idx_mapping].tolist()
        self._admit([s for s in slots if s in self.admitted], slots, totals)
        seen = (ctx.pos + 1).tolist()   # tokens visible to each row's next token
        fed = None
        positions = {}
        for row, (slot, total) in enumerate(zip(slots, totals)):
            if slot not in self.core.slots:
                continue
            if seen[row] > total and fed is None:
                fed = ctx.input_ids.tolist()
            if self._refresh(slot, total, seen[row], fed[row] if fed else None):
                positions[slot] = row
        return self.core.apply(logits, positions)

    def _admit(self, new: List[int], slots: List[int], totals: List[int]) -> None:
        """Admitted requests join the core at their first step, with the
        prompt (and, after preemption, the output so far) from the slot."""
        if not new:
            return
        added = []
        for slot in new:
            entry = self.admitted.pop(slot)
            prompt_len = int(self.req_states.prompt_len.np[slot])
            ids = self._tokens(slot, 0, totals[slots.index(slot)])
            self.prompt_lens[slot] = prompt_len
            self.outputs[slot] = ids[prompt_len:]
            request = self.core.new_request(entry.request, entry.sampling, ids[:prompt_len],
                                            self.outputs[slot])
            added.append((slot, request, entry.request_id))
        ids_by_slot = {slot: request_id for slot, _, request_id in added}
        self.core.update([], [(slot, request) for slot, request, _ in added], [],
                         _IdsBySlot(ids_by_slot))

    def _refresh(self, slot: int, total: int, seen: int, fed: Optional[int]) -> bool:
        """Brings the request's output ids up to the row's position: the
        tokens committed since the last step, and the token fed this step
        when the runner commits it only after sampling (`fed`). False while
        the request is still prefilling (the row's token is dropped)."""
        output = self.outputs[slot]
        have = self.prompt_lens[slot] + len(output)
        if total > have:
            output.extend(self._tokens(slot, have, total))
            have = total
        if seen == have + 1 and fed is not None:
            output.append(fed)
            have += 1
        return seen == have

    def _tokens(self, slot: int, start: int, stop: int) -> List[int]:
        return self.req_states.all_token_ids.gpu[slot, start:stop].tolist()


class _IdsBySlot:
    """`BlendCore.update`'s request_ids for slots: index -> id or None."""

    def __init__(self, ids: Dict[int, Optional[str]]):
        self.ids = ids

    def __getitem__(self, slot: int) -> Optional[str]:
        return self.ids.get(slot)

    def __bool__(self) -> bool:
        return True
