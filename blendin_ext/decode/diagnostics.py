"""What a generation returns besides text: per-sequence intervention
diagnostics (the paper's signals of a poorly matched pair: a high
intervention rate, low agreement), per-token stream events, and the loop's
counters (model forwards, tokens processed, time)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

WINNERS = ("base", "guide", "both", "neither")


def winner(token: int, base_top: int, guide_top: int) -> str:
    """Whose favourite the chosen token was at an intervention: the base's
    argmax, the guide's argmax, both (they agreed), or neither (a sampled
    or blended token that was nobody's first choice)."""
    is_base, is_guide = token == base_top, token == guide_top
    if is_base and is_guide:
        return "both"
    return "base" if is_base else ("guide" if is_guide else "neither")


@dataclass
class Intervention:
    """One step where the base was unsure (c_b < gamma) and the guide joined."""

    position: int  # index of the token among the generated ones
    token: int  # base-vocabulary id chosen
    winner: str  # see `winner`
    alpha: float  # guide weight used
    agree: float  # p_base(guide's argmax)
    base_confidence: float  # c_b, the base's top-1 probability


@dataclass
class SequenceDiagnostics:
    tokens: int = 0  # tokens generated (stop token included)
    interventions: List[Intervention] = field(default_factory=list)
    base_confidence_sum: float = 0.0  # over all generated tokens
    # Share of the guide's ids for this row fed as the chosen tokens' twins
    # (a guide with another tokenizer; None otherwise): the rest were re-tokenised.
    guide_twin_share: Optional[float] = None

    @property
    def intervention_count(self) -> int:
        return len(self.interventions)

    @property
    def intervention_rate(self) -> float:
        return self.intervention_count / self.tokens if self.tokens else 0.0

    def _mean(self, name: str) -> Optional[float]:
        if not self.interventions:
            return None
        return sum(getattr(i, name) for i in self.interventions) / len(self.interventions)

    @property
    def mean_alpha(self) -> Optional[float]:
        """Mean guide weight over the interventions (None without any)."""
        return self._mean("alpha")

    @property
    def mean_agree(self) -> Optional[float]:
        """Mean p_base(guide's argmax) over the interventions (None without any)."""
        return self._mean("agree")

    @property
    def mean_base_confidence(self) -> Optional[float]:
        return self.base_confidence_sum / self.tokens if self.tokens else None

    @property
    def wins(self) -> Dict[str, int]:
        """How many interventions each side won (keys: WINNERS)."""
        counts = Counter(i.winner for i in self.interventions)
        return {name: counts.get(name, 0) for name in WINNERS}

    def record(
        self,
        token: int,
        base_confidence: float,
        intervened: bool,
        alpha: float,
        agree: float,
        base_top: int,
        guide_top: int,
    ) -> Optional[Intervention]:
        position = self.tokens
        self.tokens += 1
        self.base_confidence_sum += base_confidence
        if not intervened:
            return None
        event = Intervention(
            position, token, winner(token, base_top, guide_top), alpha, agree, base_confidence
        )
        self.interventions.append(event)
        return event

    def summary(self) -> dict:
        """JSON-friendly numbers (NaN-free)."""
        return {
            "tokens": self.tokens,
            "interventions": self.intervention_count,
            "intervention_rate": self.intervention_rate,
            "mean_alpha": self.mean_alpha,
            "mean_agree": self.mean_agree,
            "mean_base_confidence": self.mean_base_confidence,
            "wins": self.wins,
            "positions": [i.position for i in self.interventions],
            "guide_twin_share": self.guide_twin_share,
        }


@dataclass
class TokenEvent:
    """One generated token of one row, as streamed."""

    row: int  # index of the prompt
    position: int  # index among the row's generated tokens
    token: int
    text: str  # new visible text ("" while held back)
    intervention: Optional[Intervention]  # None when the base decided alone
    finished: bool  # this was the row's last token


@dataclass
class LoopStats:
    """Counters of one batch run. Forwards count model calls (prefill
    included); tokens count row x position slots fed, padding included."""

    steps: int = 0
    base_forwards: int = 0
    base_tokens: int = 0
    guide_forwards: int = 0
    guide_tokens: int = 0
    generated_tokens: int = 0  # over live rows only
    seconds: float = 0.0
    forward_seconds: float = 0.0  # only when forwards were timed (benchmarks)

    @property
    def guide_forwards_per_step(self) -> float:
        return self.guide_forwards / self.steps if self.steps else math.nan

    def summary(self) -> dict:
        out = dict(self.__dict__)
        out["guide_forwards_per_step"] = self.guide_forwards_per_step if self.steps else None
        return out
