"""BlendIn under vLLM's Model Runner V2 (``vllm.v1.worker.gpu``), onto
`BlendCore` (no vLLM import; the interface is vLLM's
``vllm/v1/worker/gpu/sample/logits_processor/interface.py``).

What V2 hands a processor, and how it is used here:

- ``add_request(slot, params)``: a request enters a slot, recycled through
  a free list; nothing says when it leaves, so a slot given to a new
  request ends its previous one, and a blended slot that a step leaves out
  sits that step out (`BlendCore.begin_step`);
- ``apply_staged_writes()``, once per step after the runner flushed its
  buffers: requests admitted since the last step join the core, with their
  prompt and (after preemption) the output they already have, read from
  ``req_states`` (``all_token_ids`` up to ``prefill_len``);
- ``apply(logits, ctx)``: ``ctx.expanded_idx_mapping`` maps each logits row
  to its slot (rows are reordered every step), ``ctx.pos`` is the position
  of each row's input token and ``ctx.input_ids`` that token. Committed
  tokens are ``all_token_ids[slot, :total_len]``; under speculative
  decoding a request owns one row per draft position
  (``ctx.expanded_local_pos``), and row j sees the committed tokens plus
  its first j draft tokens, which are only in ``ctx.input_ids``.

So the context of a row is the committed tokens up to its position, then
the inputs of its request's rows up to it. The core decides one draft
position at a time (`BlendCore.run`), each request's token list set to
that row's output, so that the guide sees each row's own context: rejected
draft tokens are rolled back by the guide's common-prefix sync. A row
before the end of its request's prefill (chunked prefill) produces no
token and is left alone.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional

import torch

from blendin_ext.vllm.config import has_blendin
from blendin_ext.vllm.core import BlendCore
from blendin_ext.vllm.requests import request_from_params


class SlotRows:
    """The blended requests of a V2 runner, by slot, driving a `BlendCore`."""

    def __init__(self, core: BlendCore, req_states):
        self.core = core
        self.req_states = req_states  # LogitsProcRequestState (read-only)
        self.admitted: Dict[int, object] = {}  # slot -> SamplingParams, joining next step
        self.committed: Dict[int, List[int]] = {}  # slot -> committed output ids

    # ------------------------------------------------------------ requests
    def add(self, slot: int, params) -> bool:
        """A request enters `slot` (its previous occupant has left); True
        when BlendIn decides its tokens."""
        self.admitted.pop(slot, None)
        if slot in self.core.requests:
            self.committed.pop(slot, None)
            self.core.update([slot], [], [])
        if not has_blendin(params.extra_args):
            return False
        self.admitted[slot] = params
        return True

    def join_admitted(self) -> None:
        """Admitted requests join the core (their slot's ids are flushed)."""
        if not self.admitted:
            return
        joining = []
        for slot, params in self.admitted.items():
            prompt_len = int(self.req_states.prompt_len.np[slot])
            prefill_len = int(self.req_states.prefill_len.np[slot])
            ids = self._tokens(slot, 0, prefill_len)
            request = request_from_params(
                self.core.config, params, ids[:prompt_len], ids[prompt_len:], self.core.eos_ids
            )
            if request is not None:
                self.committed[slot] = list(request.tokens)
            joining.append((slot, request))
        self.admitted.clear()
        self.core.update([], joining, [])

    # ----------------------------------------------------------------- step
    def apply(self, logits: torch.Tensor, ctx) -> torch.Tensor:
        self.join_admitted()
        if not self.core.requests or not any(
            int(s) in self.core.requests for s in ctx.idx_mapping_np
        ):
            self.core.begin_step(())
            return logits  # no blended request in this step: no device sync
        slots, local, pos, fed = torch.stack(
            [
                ctx.expanded_idx_mapping.long(),
                ctx.expanded_local_pos.long(),
                ctx.pos.long(),
                ctx.input_ids.long(),
            ]
        ).tolist()
        rows_of = defaultdict(list)  # slot -> its rows, by draft position
        for row, slot in enumerate(slots):
            if slot in self.core.requests:
                rows_of[slot].append(row)
        self.core.begin_step(rows_of)
        totals = self._totals(list(rows_of))
        levels: Dict[int, Dict[int, tuple]] = defaultdict(dict)  # draft position -> slot -> row
        for slot, rows in rows_of.items():
            rows.sort(key=lambda r: local[r])
            committed = self._committed(slot, totals[slot])
            prompt_len = int(self.req_states.prompt_len.np[slot])
            prefill_len = int(self.req_states.prefill_len.np[slot])
            for row in rows:
                if pos[row] + 1 < prefill_len:
                    continue  # a prefill chunk: its sample is discarded
                output = row_output(committed, prompt_len, totals[slot], pos, fed, rows, row)
                if output is not None:
                    levels[local[row]][slot] = (row, output)
        for level in sorted(levels):
            for slot, (_, output) in levels[level].items():
                self.core.requests[slot].tokens[:] = output  # in place: the guide reads it
            self.core.run(logits, {slot: row for slot, (row, _) in levels[level].items()})
        self.core.end_step(rows_of)
        return logits

    def _totals(self, slots: List[int]) -> Dict[int, int]:
        index = torch.tensor(slots, dtype=torch.long, device=self.req_states.total_len.gpu.device)
        return dict(zip(slots, self.req_states.total_len.gpu.index_select(0, index).tolist()))

    def _committed(self, slot: int, total: int) -> List[int]:
        """The slot's committed output ids (read from the runner's buffer
        only where they grew since the last step)."""
        prompt_len = int(self.req_states.prompt_len.np[slot])
        committed = self.committed[slot]
        have = prompt_len + len(committed)
        if total > have:
            committed.extend(self._tokens(slot, have, total))
        elif total < have:
            del committed[max(total - prompt_len, 0) :]
        return committed

    def _tokens(self, slot: int, start: int, stop: int) -> List[int]:
        return self.req_states.all_token_ids.gpu[slot, start:stop].tolist()


def row_output(
    committed: List[int],
    prompt_len: int,
    total: int,
    pos: List[int],
    fed: List[int],
    rows: List[int],
    row: int,
) -> Optional[List[int]]:
    """The output ids a row's logits follow: the committed ones up to its
    position, then the tokens its request's rows feed from `total` up to
    it (a runner's last sampled token not yet committed, draft tokens).
    None when some position is not known."""
    seen = pos[row] + 1  # tokens visible to the row's next token
    output = committed[: max(min(total, seen) - prompt_len, 0)]
    if seen > total:
        inputs = {pos[r]: fed[r] for r in rows if total <= pos[r] <= pos[row]}
        extra = [inputs.get(p) for p in range(total, seen)]
        if None in extra:
            return None
        output = output + extra
    return output if prompt_len + len(output) == seen else None
