"""The strategy table: every decoding baseline of the paper as a point
(gamma, alpha) of the one BlendIn step, so one op serves them all and a
batch can run several side by side (each row its own gamma and alpha).

The decode loop, the command line, the eval and the tests all read this
table. Names have aliases ("nudge" is "nudging"); `choose` resolves a name
to its canonical label, which is what results are reported under.
``blend-A`` (e.g. ``blend-0.5``) names a fixed blend with weight A.

One name is not a point of the op: ``blendin-top100`` (``blendin-topN``)
is the paper's published procedure, the reliability-weighted blend over the
two models' top-N lists only, greedy (blendin_ext/ops/top_n.py). It is
resolved here like the others, with ``top_n = N``; the table below holds
the op's points alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from blendin_ext.ops.validate import AlphaValue, check_alpha, check_gamma

AUTO = -1.0  # alpha < 0 in a per-row tensor: the reliability rule
ALWAYS = 2.0  # gamma > 1: c_b <= 1 < gamma, so the guide joins every step


@dataclass(frozen=True)
class Strategy:
    """One row of the table. ``gamma`` None takes the caller's threshold;
    ``alpha`` None takes the caller's weight, with ``default_alpha`` standing
    in for "auto" (a fixed blend needs a number)."""

    name: str
    summary: str
    gamma: Optional[float]
    alpha: Union[None, str, float]
    default_alpha: Optional[float] = None


STRATEGIES = {
    s.name: s
    for s in (
        Strategy("base", "base model only (never intervene)", 0.0, 0.0),
        Strategy("guide", "guide model only (always intervene, alpha 1)", ALWAYS, 1.0),
        Strategy(
            "nudging", "token-level nudging: the guide's token where the base is unsure", None, 1.0
        ),
        Strategy(
            "blend", "fixed mixture where the base is unsure (alpha default 0.5)", None, None, 0.5
        ),
        Strategy(
            "blendin",
            "BlendIn: the reliability-weighted mixture where the base is unsure",
            None,
            "auto",
        ),
        Strategy("ensemble", "fixed mixture at every step (alpha default 0.5)", ALWAYS, None, 0.5),
    )
}
ALIASES = {
    "nudge": "nudging",
    "base_only": "base",
    "guide_only": "guide",
    "fixed_blend": "blend",
    "plain_ensemble": "ensemble",
}
TOP_N_PREFIX = "blendin-top"  # blendin-topN: the paper's top-N procedure
DEFAULT_TOP_N = 100
NAMES_HELP = (
    ", ".join(STRATEGIES) + ", blend-A with a fixed weight A in [0, 1], or "
    f"{TOP_N_PREFIX}{DEFAULT_TOP_N} (the paper's top-{DEFAULT_TOP_N} procedure, greedy; "
    f"{TOP_N_PREFIX}N for another N)"
)


@dataclass(frozen=True)
class StrategyChoice:
    """A resolved strategy: its canonical label and the (gamma, alpha) the op gets."""

    name: str
    gamma: float
    alpha: AlphaValue  # "auto" or a weight in [0, 1]
    top_n: int = 0  # > 0: the paper's top-N procedure instead of the op (greedy only)


def choose(
    spec: str,
    gamma: float = 0.4,
    alpha: AlphaValue = "auto",
    *,
    name: str = "strategy",
    where: str = "",
) -> StrategyChoice:
    """Resolves a strategy name, alias or ``blend-A`` given the caller's gamma
    and alpha; raises ValueError naming ``name`` for an unknown one."""
    gamma = check_gamma(gamma, "gamma", where)
    alpha = check_alpha(alpha, "alpha", where)
    key = spec.strip().lower() if isinstance(spec, str) else spec
    key = ALIASES.get(key, key)
    label = key
    if isinstance(key, str) and key.startswith(TOP_N_PREFIX):
        return _top_n_choice(spec, key, gamma, name, where)
    if isinstance(key, str) and key.startswith("blend-"):
        try:
            alpha = check_alpha(float(key[len("blend-") :]), name, where)
        except ValueError:
            raise ValueError(
                f"{name}: {spec!r} needs a weight in [0, 1] after 'blend-'{where}"
            ) from None
        key, label = "blend", f"blend-{alpha:g}"
    strategy = STRATEGIES.get(key)
    if strategy is None:
        raise ValueError(f"unknown {name} {spec!r}{where}; expected one of {NAMES_HELP}")
    row_gamma = strategy.gamma if strategy.gamma is not None else gamma
    row_alpha = strategy.alpha
    if row_alpha is None:
        row_alpha = strategy.default_alpha if alpha == "auto" else alpha
    return StrategyChoice(label, float(row_gamma), row_alpha)


def _top_n_choice(spec: str, key: str, gamma: float, name: str, where: str) -> StrategyChoice:
    """``blendin-topN``: BlendIn's gate and auto weight over the top-N lists."""
    digits = key[len(TOP_N_PREFIX) :]
    if not digits.isdigit() or int(digits) < 1:
        raise ValueError(
            f"{name}: {spec!r} needs a list length N >= 1 after {TOP_N_PREFIX!r}{where}"
        )
    return StrategyChoice(f"{TOP_N_PREFIX}{int(digits)}", float(gamma), "auto", int(digits))


def op_kwargs(spec: str, gamma: float = 0.4, alpha: AlphaValue = "auto") -> dict:
    """``gamma=`` / ``alpha=`` keyword arguments of blend_step for a strategy."""
    choice = choose(spec, gamma, alpha)
    if choice.top_n:
        raise ValueError(
            f"{choice.name} is not a point of blend_step: it is the paper's top-N "
            "procedure (blendin_ext.ops.top_n.top_n_step)"
        )
    return {"gamma": choice.gamma, "alpha": choice.alpha}


def choose_many(
    text: str, gamma: float = 0.4, alpha: AlphaValue = "auto", *, name: str = "strategies"
) -> list:
    """A comma-separated list of strategies, resolved, in order, without
    repeats (an alias and its name count once)."""
    specs = [part.strip() for part in text.split(",") if part.strip()]
    if not specs:
        raise ValueError(f"{name} is empty; expected a comma-separated list of {NAMES_HELP}")
    unique = {}
    for spec in specs:
        choice = choose(spec, gamma, alpha, name=name)
        unique.setdefault(choice.name, choice)
    return list(unique.values())
