"""Decoding strategies compared by `blendin eval`, by command-line name.

The (gamma, alpha) of each comes from the decode loop's own table
(`blendin_ext.strategies.STRATEGIES`, the spec's table): base only never
intervenes, guide only always intervenes with alpha 1, nudging switches hard
where the base is unsure, a fixed blend mixes with a constant weight there,
BlendIn uses the reliability rule and the plain ensemble always mixes.
Here ``blend-A`` names a fixed blend with weight A, so that several can be
compared in one run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from blendin_ext.strategies import AUTO, STRATEGIES

STRATEGY_HELP = ("base, guide, nudge, blendin, ensemble, or blend-A with a fixed "
                 "guide weight A in [0, 1] (e.g. blend-0.5)")


@dataclass(frozen=True)
class Strategy:
    name: str
    gamma: float
    alpha: Union[float, str]  # a weight in [0, 1] or "auto"


def parse_strategy(name: str, gamma: float = 0.4) -> Strategy:
    """One strategy from its command-line name; ``gamma`` is the uncertainty
    threshold of the strategies that intervene only when unsure."""
    key = name.strip().lower()
    alpha: Union[float, str] = "auto"
    if key.startswith("blend-"):
        try:
            alpha = float(key[len("blend-"):])
        except ValueError:
            alpha = -1.0
        rule = STRATEGIES["blend"] if 0.0 <= alpha <= 1.0 else None
    else:
        rule = STRATEGIES.get(key) if key != "blend" else None
    if rule is None:
        raise ValueError(f"--strategies: unknown strategy {name!r}; expected {STRATEGY_HELP}")
    row_gamma, row_alpha = rule(gamma, alpha)
    return Strategy(key, float(row_gamma), "auto" if row_alpha == AUTO else float(row_alpha))


def parse_strategies(text: str, gamma: float = 0.4) -> list:
    """A comma-separated list, in order, without repeats."""
    if gamma < 0:
        raise ValueError(f"--gamma must be >= 0, got {gamma}")
    names = [n for n in (part.strip() for part in text.split(",")) if n]
    if not names:
        raise ValueError(f"--strategies is empty; expected a comma-separated list of {STRATEGY_HELP}")
    unique = {}
    for strategy in (parse_strategy(n, gamma) for n in names):
        unique.setdefault(strategy.name, strategy)
    return list(unique.values())
