"""Decoding options and their per-row form for the fused op.

Every baseline of the paper is a point (gamma, alpha) of the one op
(spec table in /work/shared/spec/blend_step.md), so a batch can run several
strategies side by side: each row gets its own gamma and alpha.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Sequence, Union

import torch

AUTO = -1.0     # alpha < 0 in a per-row tensor: the reliability rule
ALWAYS = 2.0    # gamma > 1: c_b <= 1 < gamma, the guide joins every step


def _number_or(alpha, default: float) -> float:
    return default if isinstance(alpha, str) else float(alpha)


# name -> (gamma, alpha) given the call's gamma and alpha.
STRATEGIES = {
    "base": lambda gamma, alpha: (0.0, 0.0),                  # never intervene
    "guide": lambda gamma, alpha: (ALWAYS, 1.0),              # always, guide only
    "nudging": lambda gamma, alpha: (gamma, 1.0),             # hard switch when unsure
    "nudge": lambda gamma, alpha: (gamma, 1.0),               # alias of nudging
    "blend": lambda gamma, alpha: (gamma, _number_or(alpha, 0.5)),    # fixed mixture
    "blendin": lambda gamma, alpha: (gamma, AUTO),            # the paper's method
    "ensemble": lambda gamma, alpha: (ALWAYS, _number_or(alpha, 0.5)),  # always mix
}

Value = Union[None, str, float, int, Sequence]


@dataclass
class DecodeOptions:
    """Options of one generate / stream call. Parameters marked "per prompt"
    take one value for all rows or a list with one value per prompt.

    max_new_tokens: tokens to generate at most per row (>= 0).
    strategy (per prompt): None (gamma / alpha as given) or a name of
        STRATEGIES: "base", "guide", "nudging", "blend", "blendin", "ensemble".
    gamma (per prompt): the guide joins when the base's top-1 prob < gamma.
    alpha (per prompt): "auto" (the reliability rule) or a weight in [0, 1].
    agree_bonus: the auto rule's agreement bonus.
    temperature, top_k, top_p (per prompt): 0 is greedy; filters per model.
    seed: int (row i uses seed + i) or one int per prompt; a row's draws do
        not depend on the rest of the batch.
    stop: stop string(s); a row ends at the first, cut from its text.
    lazy: run the guide only at steps where some live row intervenes.
    """

    max_new_tokens: int = 128
    strategy: Value = None
    gamma: Value = 0.4
    alpha: Value = "auto"
    agree_bonus: float = 0.1
    temperature: Value = 0.0
    top_k: Value = None
    top_p: Value = None
    seed: Value = 0
    stop: Union[None, str, Sequence[str]] = None
    lazy: bool = False

    def __post_init__(self):
        m = self.max_new_tokens
        if isinstance(m, bool) or not isinstance(m, Integral) or m < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {m!r}")
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if any(not isinstance(s, str) or not s for s in stops):
            raise ValueError(f"stop must be a non-empty string or a list of them, got {self.stop!r}")
        self.stop_strings = stops
        if not isinstance(self.agree_bonus, Real):
            raise ValueError(f"agree_bonus must be a number, got {self.agree_bonus!r}")


def per_row(name: str, value, n: int) -> list:
    """A scalar broadcast to n rows, or a list checked to have n entries."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} values for {n} prompts")
        return list(value)
    if isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: pass a number or a list, not a tensor")
    return [value] * n


def _check_row(i: int, gamma, alpha, temperature, top_k, top_p) -> None:
    where = f" (prompt {i})"
    if not isinstance(gamma, Real) or not gamma >= 0:
        raise ValueError(f"gamma must be a number >= 0, got {gamma!r}{where}")
    if isinstance(alpha, str):
        if alpha != "auto":
            raise ValueError(f'alpha must be "auto" or a number in [0, 1], got {alpha!r}{where}')
    elif not isinstance(alpha, Real) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f'alpha must be "auto" or a number in [0, 1], got {alpha!r}{where}')
    if not isinstance(temperature, Real) or not temperature >= 0:
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}{where}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, Integral)
                              or top_k < 0):
        raise ValueError(f"top_k must be None or an int >= 0, got {top_k!r}{where}")
    if top_p is not None and (not isinstance(top_p, Real) or not 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}{where}")


def _pair(values: list, dtype, device):
    """The op's (tensor or None, scalar) form: a scalar when every row
    agrees (the op then validates nothing per step), else a (B,) tensor."""
    if all(v == values[0] for v in values):
        return None, values[0]
    return torch.tensor(values, dtype=dtype, device=device), values[0]


@dataclass
class RowParams:
    """Per-row parameters, already in the argument order of
    torch.ops.blendin_ext.blend_step between the maps and the offset."""

    gamma: list
    alpha: list           # AUTO for the reliability rule
    temperature: list
    seed: torch.Tensor    # (B,) int64: per-row seeds, RNG stream independent of the row
    op_args: tuple

    @classmethod
    def build(cls, n: int, device, options: DecodeOptions) -> "RowParams":
        strategies = per_row("strategy", options.strategy, n)
        gammas = per_row("gamma", options.gamma, n)
        alphas = per_row("alpha", options.alpha, n)
        temps = per_row("temperature", options.temperature, n)
        top_ks = per_row("top_k", options.top_k, n)
        top_ps = per_row("top_p", options.top_p, n)
        seeds = ([options.seed + i for i in range(n)] if isinstance(options.seed, Integral)
                 else per_row("seed", options.seed, n))
        gamma_rows, alpha_rows = [], []
        for i in range(n):
            _check_row(i, gammas[i], alphas[i], temps[i], top_ks[i], top_ps[i])
            if not isinstance(seeds[i], Integral) or isinstance(seeds[i], bool):
                raise ValueError(f"seed must be an int or a list of ints, got {seeds[i]!r}")
            g, a = float(gammas[i]), alphas[i]
            if strategies[i] is not None:
                if strategies[i] not in STRATEGIES:
                    raise ValueError(f"unknown strategy {strategies[i]!r} (prompt {i}); "
                                     f"expected one of {sorted(STRATEGIES)} or None")
                g, a = STRATEGIES[strategies[i]](g, a)
            gamma_rows.append(float(g))
            alpha_rows.append(AUTO if a == "auto" else float(a))
        temps = [float(t) for t in temps]
        top_ks = [0 if k is None else int(k) for k in top_ks]
        top_ps = [1.0 if p is None else float(p) for p in top_ps]
        seed = torch.tensor(seeds, dtype=torch.int64, device=device)
        op_args = (*_pair(gamma_rows, torch.float32, device), *_pair(alpha_rows, torch.float32, device),
                   float(options.agree_bonus), *_pair(temps, torch.float32, device),
                   *_pair(top_ks, torch.int32, device), *_pair(top_ps, torch.float32, device),
                   seed, 0)
        return cls(gamma_rows, alpha_rows, temps, seed, op_args)
