"""The op's argument order and result, owned by two small types.

``torch.ops.blendin_ext.blend_step`` takes 19 positional arguments: the two
logit tensors, the map and its inverse, then the per-row parameters, each
as a (tensor or None, scalar) pair that the op reads as "the tensor when
given, else the scalar". `StepArgs` holds those 15 parameter slots in the
schema's order, so no caller spells the order out; `BlendStepResult` names
the six outputs. Pure Python: importable without the compiled extension.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch

from blendin_ext.ops.strategies import AUTO
from blendin_ext.ops.validate import (
    check_agree_bonus,
    check_alpha,
    check_gamma,
    check_seed,
    check_temperature,
    check_top_k,
    check_top_p,
)

RowValue = Union[float, int, torch.Tensor]


class BlendStepResult(NamedTuple):
    """Per-row outputs of one step, each of shape (B,)."""

    tokens: torch.Tensor  # int64 base-vocabulary token, -1 for a bad row
    intervened: torch.Tensor  # bool, base top-1 prob < gamma
    alpha: torch.Tensor  # float32 guide weight used (0 where not intervened)
    base_top_prob: torch.Tensor  # float32 c_b = max p_base
    guide_top_prob: torch.Tensor  # float32 c_g = max p_guide (mapped, renormalised)
    agree: torch.Tensor  # float32 p_base(argmax p_guide)


def _pair(value, check, name: str):
    """A parameter as the schema's (tensor or None, scalar) pair; a tensor
    is checked by the op itself (dtype, shape, device, range)."""
    if isinstance(value, torch.Tensor):
        return value, None
    return None, check(value, name)


class StepArgs(NamedTuple):
    """The parameter slots of one blend_step call, in the schema's order
    (after base_logits, guide_logits, guide_to_base, base_to_guide)."""

    gamma_tensor: Optional[torch.Tensor]
    gamma_value: float
    alpha_tensor: Optional[torch.Tensor]
    alpha_value: float  # < 0: the reliability rule ("auto")
    agree_bonus: float
    temperature_tensor: Optional[torch.Tensor]
    temperature_value: float
    top_k_tensor: Optional[torch.Tensor]
    top_k_value: int  # 0: no top-k filter
    top_p_tensor: Optional[torch.Tensor]
    top_p_value: float  # 1: no top-p filter
    seed_tensor: Optional[torch.Tensor]
    seed_value: int
    offset_tensor: Optional[torch.Tensor]
    offset_value: int

    @classmethod
    def build(
        cls,
        *,
        gamma: RowValue = 0.4,
        alpha: Union[str, RowValue] = "auto",
        agree_bonus: float = 0.1,
        temperature: RowValue = 0.0,
        top_k: Optional[RowValue] = None,
        top_p: Optional[RowValue] = None,
        seed: RowValue = 0,
        offset: RowValue = 0,
    ) -> "StepArgs":
        """From Python-friendly values: numbers (checked here, each error
        naming its parameter) or per-row tensors (checked by the op)."""
        gamma_t, gamma_v = _pair(gamma, check_gamma, "gamma")
        alpha_t, alpha_v = _pair(alpha, check_alpha, "alpha")
        temp_t, temp_v = _pair(temperature, check_temperature, "temperature")
        top_k_t, top_k_v = _pair(top_k, check_top_k, "top_k")
        top_p_t, top_p_v = _pair(top_p, check_top_p, "top_p")
        seed_t, seed_v = _pair(seed, check_seed, "seed")
        offset_t, offset_v = _pair(offset, check_seed, "offset")
        return cls(
            gamma_t,
            0.0 if gamma_v is None else gamma_v,
            alpha_t,
            AUTO if alpha_v in (None, "auto") else alpha_v,
            check_agree_bonus(agree_bonus),
            temp_t,
            0.0 if temp_v is None else temp_v,
            top_k_t,
            top_k_v or 0,
            top_p_t,
            1.0 if top_p_v is None else top_p_v,
            seed_t,
            seed_v or 0,
            offset_t,
            offset_v or 0,
        )

    def take(self, index: torch.Tensor, batch: int) -> "StepArgs":
        """The same parameters for rows `index` of a batch of `batch` rows
        (per-row tensors are indexed; scalars and (1,) tensors are kept)."""
        return StepArgs(
            *(
                v.index_select(0, index)
                if isinstance(v, torch.Tensor)
                and v.dim() == 1
                and v.shape[0] == batch
                and batch > 1
                else v
                for v in self
            )
        )

    @property
    def greedy(self) -> bool:
        """Every row greedy (temperature 0, as one number)."""
        return self.temperature_tensor is None and self.temperature_value == 0

    def at_offset(self, offset: int) -> "StepArgs":
        """The same parameters at another RNG offset (the decode step)."""
        return self._replace(offset_tensor=None, offset_value=offset)
