"""Decoding strategies compared by `blendin eval`, as points of the op's
(gamma, alpha) space (see the spec's table): base only never intervenes,
guide only always intervenes with alpha 1, nudging switches hard where the
base is unsure, a fixed blend mixes with a constant weight there, BlendIn
uses the reliability rule ("auto") and the plain ensemble always mixes 50/50.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

ALWAYS = 2.0  # a gamma above 1: every step counts as uncertain

STRATEGY_HELP = ("base, guide, nudge, blendin, ensemble, or blend-A with a fixed "
                 "guide weight A in [0, 1] (e.g. blend-0.5)")


@dataclass(frozen=True)
class Strategy:
    name: str
    gamma: float
    alpha: Union[float, str]  # a weight in [0, 1] or "auto"

    @property
    def uses_guide(self) -> bool:
        return self.gamma > 0


def parse_strategy(name: str, gamma: float = 0.4) -> Strategy:
    """One strategy from its command-line name; ``gamma`` is the uncertainty
    threshold shared by the strategies that intervene only when unsure."""
    key = name.strip().lower()
    fixed = {
        "base": (0.0, 0.0),
        "guide": (ALWAYS, 1.0),
        "nudge": (gamma, 1.0),
        "blendin": (gamma, "auto"),
        "ensemble": (ALWAYS, 0.5),
    }
    if key in fixed:
        return Strategy(key, *fixed[key])
    if key.startswith("blend-"):
        try:
            alpha = float(key[len("blend-"):])
        except ValueError:
            alpha = -1.0
        if 0.0 <= alpha <= 1.0:
            return Strategy(key, gamma, alpha)
    raise ValueError(f"--strategies: unknown strategy {name!r}; expected {STRATEGY_HELP}")


def parse_strategies(text: str, gamma: float = 0.4) -> list:
    """A comma-separated list, in order, without repeats."""
    if gamma < 0:
        raise ValueError(f"--gamma must be >= 0, got {gamma}")
    names = [n for n in (part.strip() for part in text.split(",")) if n]
    if not names:
        raise ValueError(f"--strategies is empty; expected a comma-separated list of {STRATEGY_HELP}")
    strategies = [parse_strategy(n, gamma) for n in names]
    seen = set()
    unique = []
    for strategy in strategies:
        if strategy.name not in seen:
            seen.add(strategy.name)
            unique.append(strategy)
    return unique
