"""One blended request as the plug-in holds it, built from what vLLM hands a
processor for it: its ``SamplingParams`` and token ids (no vLLM import).

The request's ``tokens`` are the plug-in's own list of its output so far:
the guide reads it by reference, and the op's random stream is seeded by
its length. The runner adapters (runner_v1.py, runner_v2.py) bring it up
to date from the engine before each step, never with a placeholder: a
token the engine has not copied back yet is the one the op chose
(``decided``).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Sequence

from blendin_ext.ops.strategies import StrategyChoice
from blendin_ext.vllm.config import EngineConfig, RequestConfig
from blendin_ext.vllm.diagnostics import RequestDiagnostics

logger = logging.getLogger("blendin_ext.vllm")


@dataclass
class Sampling:
    """The request's own sampling settings, which the op applies per model."""

    temperature: float
    top_k: Optional[int]
    top_p: Optional[float]
    seed: int

    @classmethod
    def of(
        cls, temperature: float, top_k: Optional[int], top_p: Optional[float], seed: Optional[int]
    ) -> "Sampling":
        """vLLM's conventions: top_k <= 0 and top_p 1 mean no filter; no
        seed means a fresh random one (not reproducible, as in vLLM)."""
        return cls(
            float(temperature),
            top_k if top_k and top_k > 0 else None,
            top_p if top_p is not None and top_p < 1 else None,
            random.getrandbits(63) if seed is None else int(seed),
        )


@dataclass(eq=False)
class BlendRequest:
    """One blended request: its choices, prompt and output so far."""

    choice: StrategyChoice
    agree_bonus: float
    sampling: Sampling
    prompt_ids: List[int]
    tokens: List[int]  # output so far, the plug-in's own list
    request_id: Optional[str] = None  # extra_args.blendin.request_id, if given
    max_tokens: Optional[int] = None
    min_tokens: int = 0
    stop_ids: FrozenSet[int] = frozenset()
    decided: Dict[int, int] = field(default_factory=dict)  # position -> the op's token
    diagnostics: Optional[RequestDiagnostics] = None  # set when it joins the batch
    logged: bool = False  # its summary is in the log as it stands (finished, sat out)

    @property
    def uses_guide(self) -> bool:
        return self.choice.gamma > 0

    def ends_with(self, token: int) -> bool:
        """Whether vLLM stops the request once `token` is its next output
        token: max_tokens reached or a stop token chosen (stop strings are
        vLLM's to see; a request that goes on anyway simply rejoins)."""
        count = len(self.tokens) + 1
        if self.max_tokens is not None and count >= self.max_tokens:
            return True
        return count >= self.min_tokens and token in self.stop_ids

    def remember(self, position: int, token: int) -> None:
        """The op's token at `position`, for when the engine's list still
        holds a placeholder there (asynchronous scheduling)."""
        self.decided[position] = token
        for old in [p for p in self.decided if p < position - 8]:
            del self.decided[old]


def request_from_params(
    engine: EngineConfig,
    params,
    prompt_ids: Sequence[int],
    tokens: List[int],
    eos_ids: FrozenSet[int],
) -> Optional[BlendRequest]:
    """The blended request for vLLM's ``SamplingParams`` (None when it has
    no ``extra_args["blendin"]``). eos_ids: the base's end-of-sequence ids,
    which stop a request unless it ignores EOS. Arguments that fail their
    checks here (vLLM checks them in the frontend first, with
    `validate_params`) leave the request to vLLM: raising inside the
    engine would stop it."""
    try:
        config = RequestConfig.parse(params.extra_args)
    except ValueError as exc:
        logger.warning("BlendIn: %s; leaving the request to vLLM", exc)
        return None
    if config is None:
        return None
    choice, bonus = config.resolve(engine)
    stops = set(params.stop_token_ids or ())
    if not params.ignore_eos:
        stops |= set(eos_ids)
    return BlendRequest(
        choice,
        bonus,
        Sampling.of(params.temperature, params.top_k, params.top_p, params.seed),
        list(prompt_ids),
        tokens,
        request_id=config.request_id,
        max_tokens=params.max_tokens,
        min_tokens=params.min_tokens or 0,
        stop_ids=frozenset(stops),
    )
