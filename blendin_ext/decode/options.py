"""Decoding options and their per-row form for the fused op.

Every baseline of the paper is a point (gamma, alpha) of the one op (the
table in blendin_ext.ops.strategies), so a batch can run several strategies
side by side: each row gets its own gamma and alpha.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from numbers import Integral
from typing import Optional, Sequence, Union

import torch

from blendin_ext.ops.args import StepArgs
from blendin_ext.ops.strategies import AUTO, choose
from blendin_ext.ops.top_n import TopNRows
from blendin_ext.ops.validate import (
    check_agree_bonus,
    check_alpha,
    check_gamma,
    check_guide_sync,
    check_seed,
    check_stop,
    check_temperature,
    check_token_budget,
    check_top_k,
    check_top_p,
)

Value = Union[None, str, float, int, Sequence]


@dataclass
class DecodeOptions:
    """Options of one generate / stream call. Parameters marked "per prompt"
    take one value for all rows or a list with one value per prompt.

    max_new_tokens: tokens to generate at most per row (>= 0).
    strategy (per prompt): None (gamma / alpha as given) or a name of the
        strategy table: "base", "guide", "nudging", "blend", "blendin",
        "ensemble" (aliases such as "nudge" and "blend-0.3" work too), or
        "blendin-top100", the paper's top-100 procedure (greedy only).
    gamma (per prompt): the guide joins when the base's top-1 prob < gamma.
    alpha (per prompt): "auto" (the reliability rule) or a weight in [0, 1].
    agree_bonus: the auto rule's agreement bonus.
    temperature, top_k, top_p (per prompt): 0 is greedy; filters per model.
    seed: int (row i uses seed + i) or one int per prompt; a row's draws do
        not depend on the rest of the batch.
    stop: stop string(s); a row ends at the first, cut from its text.
    lazy: run the guide only at steps where some live row intervenes.
    compact: drop finished rows from the batch (both models' caches and
        every per-row state), so that later steps only pay for live rows;
        tokens are the same either way (False keeps them, for comparison).
    guide_sync: how a guide with another tokenizer follows the chosen
        tokens: "tokens" (feed their guide twins, re-tokenise only stretches
        without twins) or "text" (re-tokenise the whole text each time).
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
    compact: bool = True
    guide_sync: str = "tokens"

    def __post_init__(self):
        self.guide_sync = check_guide_sync(self.guide_sync)
        self.max_new_tokens = check_token_budget(self.max_new_tokens)
        self.stop_strings = check_stop(self.stop)
        self.agree_bonus = check_agree_bonus(self.agree_bonus)

    @classmethod
    def of(cls, options: Optional["DecodeOptions"] = None, **fields) -> "DecodeOptions":
        """`options` with `fields` replaced (checked again), or new options
        from `fields` alone: how callers hand options on whole."""
        if options is None:
            return cls(**fields)
        if not isinstance(options, cls):
            raise TypeError(f"options must be a DecodeOptions, got {type(options).__name__}")
        return replace(options, **fields) if fields else options


def per_row(name: str, value, n: int) -> list:
    """A scalar broadcast to n rows, or a list checked to have n entries."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} values for {n} prompts")
        return list(value)
    if isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: pass a number or a list, not a tensor")
    return [value] * n


def _pair(values: list, dtype, device):
    """The op's (tensor or None, scalar) form: a scalar when every row
    agrees (the op then validates nothing per step), else a (B,) tensor."""
    if all(v == values[0] for v in values):
        return None, values[0]
    return torch.tensor(values, dtype=dtype, device=device), values[0]


@dataclass
class RowParams:
    """Per-row parameters of one batch, resolved and checked once; `args`
    is the op's StepArgs (offset 0; the loop sets the step)."""

    gamma: list
    alpha: list  # AUTO for the reliability rule
    temperature: list
    seed: torch.Tensor  # (B,) int64: per-row seeds, RNG stream independent of the row
    args: StepArgs
    top_n: Optional[list] = None  # per row: N of the paper's top-N procedure, 0 = the op

    def __post_init__(self):
        # the rows whose tokens come from blendin_ext.ops.top_n (None: none)
        self.top_n_rows = TopNRows.of(self.top_n or [], self.seed.device)

    @classmethod
    def build(cls, n: int, device, options: DecodeOptions) -> "RowParams":
        rows = {
            name: per_row(name, getattr(options, name), n)
            for name in ("strategy", "gamma", "alpha", "temperature", "top_k", "top_p")
        }
        seeds = (
            [options.seed + i for i in range(n)]
            if isinstance(options.seed, Integral) and not isinstance(options.seed, bool)
            else per_row("seed", options.seed, n)
        )
        gammas, alphas, temps, top_ks, top_ps, top_ns = [], [], [], [], [], []
        for i in range(n):
            where = f" (prompt {i})"
            gamma = check_gamma(rows["gamma"][i], where=where)
            alpha = check_alpha(rows["alpha"][i], where=where)
            top_n = 0
            if rows["strategy"][i] is not None:
                choice = choose(rows["strategy"][i], gamma, alpha, where=where)
                gamma, alpha, top_n = choice.gamma, choice.alpha, choice.top_n
            gammas.append(gamma)
            alphas.append(AUTO if alpha == "auto" else alpha)
            temps.append(check_temperature(rows["temperature"][i], where=where))
            if top_n and temps[-1] != 0:
                raise ValueError(
                    f"temperature must be 0 with strategy {choice.name} (the "
                    f"paper's procedure is greedy), got {temps[-1]}{where}"
                )
            top_ns.append(top_n)
            top_ks.append(check_top_k(rows["top_k"][i], where=where) or 0)
            top_p = check_top_p(rows["top_p"][i], where=where)
            top_ps.append(1.0 if top_p is None else top_p)
            seeds[i] = check_seed(seeds[i], where=where)
        seed = torch.tensor(seeds, dtype=torch.int64, device=device)
        gamma_t, gamma_v = _pair(gammas, torch.float32, device)
        alpha_t, alpha_v = _pair(alphas, torch.float32, device)
        temp_t, temp_v = _pair(temps, torch.float32, device)
        top_k_t, top_k_v = _pair(top_ks, torch.int32, device)
        top_p_t, top_p_v = _pair(top_ps, torch.float32, device)
        args = StepArgs(
            gamma_tensor=gamma_t,
            gamma_value=gamma_v,
            alpha_tensor=alpha_t,
            alpha_value=alpha_v,
            agree_bonus=options.agree_bonus,
            temperature_tensor=temp_t,
            temperature_value=temp_v,
            top_k_tensor=top_k_t,
            top_k_value=top_k_v,
            top_p_tensor=top_p_t,
            top_p_value=top_p_v,
            seed_tensor=seed,
            seed_value=0,
            offset_tensor=None,
            offset_value=0,
        )
        return cls(
            gamma=gammas, alpha=alphas, temperature=temps, seed=seed, args=args, top_n=top_ns
        )

    def select(self, index: Sequence[int]) -> "RowParams":
        """The parameters of rows `index` only (a batch whose finished rows
        left): every per-row tensor of the op is sliced, scalars stay."""
        rows = torch.tensor(list(index), dtype=torch.long, device=self.seed.device)
        sliced = {
            name: value.index_select(0, rows.to(value.device))
            for name, value in self.args._asdict().items()
            if name.endswith("_tensor") and value is not None
        }
        return RowParams(
            gamma=[self.gamma[i] for i in index],
            alpha=[self.alpha[i] for i in index],
            temperature=[self.temperature[i] for i in index],
            seed=sliced["seed_tensor"],
            args=self.args._replace(**sliced),
            top_n=None if self.top_n is None else [self.top_n[i] for i in index],
        )
