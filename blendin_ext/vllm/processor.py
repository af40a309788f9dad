"""The logits processor vLLM runs: the V1 runner's interface
(``vllm.v1.sample.logits_processor``) and Model Runner V2's (runner_v2.py).

    LLM(model=BASE, logits_processors=[BlendInLogitsProcessor],
        additional_config={"blendin": {"guide": "smollm2-135m-instruct"}})

vLLM builds one instance per engine worker (``__init__(vllm_config, device,
is_pin_memory)``), calls `validate_params` for every request in the frontend
(a ValueError becomes HTTP 400), `update_state` before each step with the
persistent batch's changes, and `apply` on the step's logits before its own
penalties, temperature and filters. The work is done by `BlendCore`.

The package also registers this class under the ``vllm.logits_processors``
entry point group, so an installed blendin_ext is in every engine; without
``additional_config["blendin"]`` it loads nothing and touches nothing.
"""
from __future__ import annotations

import logging
import sys
import weakref
from typing import List, Optional

import torch
from vllm.v1.sample.logits_processor import (BatchUpdate, LogitsProcessor,
                                             MoveDirectionality)

try:  # Model Runner V2's interface (vLLM >= 0.2x); absent in older vLLM
    from vllm.v1.worker.gpu.sample.logits_processor.interface import \
        LogitsProcessor as V2LogitsProcessor
except ImportError:  # pragma: no cover - depends on the vLLM version
    V2LogitsProcessor = object

from blendin_ext.vllm.config import EngineConfig, RequestConfig
from blendin_ext.vllm.core import BlendCore, Sampling
from blendin_ext.vllm.engine import build_core
from blendin_ext.vllm.runner_v2 import SlotRequests

logger = logging.getLogger("blendin_ext.vllm")

# vllm_config ids that already have an active processor: the entry point
# and an explicit logits_processors=[...] would otherwise both blend.
_ACTIVE: "weakref.WeakValueDictionary[int, BlendInLogitsProcessor]" = weakref.WeakValueDictionary()


def batch_request_ids(max_depth: int = 4) -> Optional[List[str]]:
    """The persistent batch's request ids by index, read from the object
    that is calling update_state (vLLM's InputBatch, attribute ``req_ids``);
    None if this vLLM does not call it that way."""
    frame = sys._getframe(2)
    for _ in range(max_depth):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        ids = getattr(owner, "req_ids", None) if owner is not None else None
        if isinstance(ids, list) and hasattr(owner, "batch_update_builder"):
            return ids
        frame = frame.f_back
    return None


class BlendInLogitsProcessor(LogitsProcessor, V2LogitsProcessor):
    """BlendIn for the requests whose SamplingParams carry
    ``extra_args={"blendin": {...}}`` (see blendin_ext/vllm/README.md).

    It implements both runners' interfaces on one `BlendCore`: the V1
    persistent batch (`update_state`, `apply(logits)`) and Model Runner V2
    (`add_request`, `apply(logits, ctx)`, through `SlotRequests`), which
    also refuses to load a V1-only class from the entry point."""

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        RequestConfig.parse(sampling_params.extra_args)

    def __init__(self, vllm_config, *runner_args):
        """V1: (vllm_config, device, is_pin_memory); V2: (vllm_config, req_states)."""
        self.core: Optional[BlendCore] = None
        self.slots: Optional[SlotRequests] = None   # Model Runner V2 only
        self._warned = False
        config = EngineConfig.parse(getattr(vllm_config, "additional_config", None))
        if config is None:
            return
        if id(vllm_config) in _ACTIVE:
            logger.info("BlendIn: processor registered twice (entry point and "
                        "logits_processors); this copy stays inert")
            return
        v2_states = runner_args[0] if len(runner_args) == 1 else None
        device = v2_states.device if v2_states is not None else runner_args[0]
        _ACTIVE[id(vllm_config)] = self
        self.core = build_core(config, vllm_config, device)
        if v2_states is not None:
            self.slots = SlotRequests(self.core, v2_states)

    def is_argmax_invariant(self) -> bool:
        return False   # it decides the token

    def update_state(self, batch_update: Optional[BatchUpdate]) -> None:
        if batch_update is None:
            return
        added = []
        for index, params, prompt_ids, output_ids in batch_update.added:
            request = RequestConfig.parse(params.extra_args)
            if request is not None and self.core is None:
                self._warn_once("a request has extra_args.blendin but this engine has no "
                                "additional_config.blendin (no guide); leaving it to vLLM")
            if request is not None and prompt_ids is None:
                # Raising here would stop the engine: leave the request to vLLM.
                self._warn_once("a request with extra_args.blendin came as prompt embeddings "
                                "(no token ids), which BlendIn cannot read; leaving it to vLLM")
                request = None
            if request is None or self.core is None:
                added.append((index, None))
                continue
            sampling = Sampling.of(params.temperature, params.top_k, params.top_p, params.seed)
            added.append((index, self.core.new_request(request, sampling, prompt_ids,
                                                       output_ids)))
        if self.core is None:
            return
        moved = [(a, b, direction == MoveDirectionality.SWAP)
                 for a, b, direction in batch_update.moved]
        self.core.update(batch_update.removed, added, moved, batch_request_ids())

    def apply(self, logits: torch.Tensor, ctx=None) -> torch.Tensor:
        if self.core is None:
            return logits
        return self.core.apply(logits) if ctx is None else self.slots.apply(logits, ctx)

    def add_request(self, req_idx: int, sampling_params) -> bool:
        """Model Runner V2: a request enters slot `req_idx`; True when BlendIn
        decides its tokens."""
        if self.slots is None:
            if RequestConfig.parse(getattr(sampling_params, "extra_args", None)) is not None:
                self._warn_once("a request has extra_args.blendin but this engine has no "
                                "additional_config.blendin (no guide); leaving it to vLLM")
            return False
        return self.slots.add(req_idx, sampling_params)

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("BlendIn: %s", message)
