"""Python face of the fused op: the typed wrapper, the raw call every
caller shares, and the fake (meta) kernel that lets torch.compile trace it.

Importing this module loads the compiled extension (``blendin_ext._C``),
which registers ``torch.ops.blendin_ext.blend_step``. Semantics: README.md
beside this file.
"""

from __future__ import annotations

import functools
from typing import Optional, Union

import torch

try:
    from blendin_ext import _C  # noqa: F401  (loading it registers the ops)
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "blendin_ext._C is not built; run `pip install --no-build-isolation -e .` "
        "in the project root"
    ) from exc

from blendin_ext.ops.args import BlendStepResult, RowValue, StepArgs
from blendin_ext.ops.maps import GuideMap, MapArg, as_guide_map


def run_step(
    base_logits: torch.Tensor, guide_logits: torch.Tensor, maps: Optional[GuideMap], args: StepArgs
) -> BlendStepResult:
    """The raw op on prepared arguments: no checks, no allocation beyond the
    op's own; what hot loops call once per decode step."""
    return BlendStepResult(
        *torch.ops.blendin_ext.blend_step(
            base_logits,
            guide_logits,
            None if maps is None else maps.guide_to_base,
            None if maps is None else maps.base_to_guide,
            *args,
        )
    )


def run_base_step(base_logits: torch.Tensor, args: StepArgs) -> BlendStepResult:
    """The op with the base alone (what a lazy step runs before it knows
    whether the guide is needed): per row whether it intervenes (c_b <
    gamma) and the token of a = 0, which is the step's token for every row
    that does not intervene and, for greedy rows, the base's argmax.

    The guide is a one-column stand-in mapped to base id 0 and alpha is
    fixed at 0, so the guide's mass never enters: the op reads one softmax
    instead of two. guide_top_prob, agree and alpha describe the stand-in,
    not a guide."""
    stand_in = base_logits.new_zeros((base_logits.shape[0], 1))
    maps = _stand_in_map(base_logits.shape[1], base_logits.device)
    return run_step(base_logits, stand_in, maps, args._replace(alpha_tensor=None, alpha_value=0.0))


@functools.lru_cache(maxsize=8)
def _stand_in_map(vocab: int, device: torch.device) -> GuideMap:
    """Guide token 0 -> base id 0, for `run_base_step`'s stand-in guide."""
    inverse = torch.full((vocab,), -1, dtype=torch.int32, device=device)
    inverse[0] = 0
    return GuideMap(torch.zeros(1, dtype=torch.int64, device=device), inverse)


def blend_step(
    base_logits: torch.Tensor,
    guide_logits: torch.Tensor,
    *,
    guide_to_base: MapArg = None,
    gamma: RowValue = 0.4,
    alpha: Union[str, RowValue] = "auto",
    agree_bonus: float = 0.1,
    temperature: RowValue = 0.0,
    top_k: Optional[RowValue] = None,
    top_p: Optional[RowValue] = None,
    seed: Optional[RowValue] = None,
    offset: RowValue = 0,
) -> BlendStepResult:
    """One BlendIn decode step over a batch (semantics: blendin_ext/ops/README.md).

    base_logits: (B, V) float32/float16/bfloat16, unit stride along V.
    guide_logits: (B, Vg), same dtype and device.
    guide_to_base: (Vg,) map to base ids (-1: no twin) or a GuideMap; None
        when both models share the vocabulary (Vg == V).
    gamma, temperature, top_k, top_p: a number, or a (B,) tensor on the
        logits' device (float32; top_k int32). top_k None/0 and top_p None/1
        disable the filters; temperature 0 is greedy.
    alpha: "auto" (the reliability rule), a number in [0, 1], or a (B,)
        float32 tensor where a negative entry means auto for that row.
    seed, offset: int64 numbers or (1,)/(B,) int64 tensors; same seed and
        offset give the same tokens. A per-row seed tensor makes each row's
        draws independent of its position in the batch. seed=None (the
        default) draws a fresh seed from torch's default generator, so
        repeated calls differ and torch.manual_seed makes them repeat (a call
        with temperature=0, a number, is greedy and draws nothing). Under
        torch.compile pass an explicit seed.
    """
    _check_logits_arg(base_logits, "base_logits")
    _check_logits_arg(guide_logits, "guide_logits")
    if seed is None:
        seed = 0 if _is_greedy(temperature) else fresh_seed()
    args = StepArgs.build(
        gamma=gamma,
        alpha=alpha,
        agree_bonus=agree_bonus,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        offset=offset,
    )
    maps = as_guide_map(guide_to_base, base_logits.shape[1], base_logits.device)
    return run_step(base_logits, guide_logits, maps, args)


def fresh_seed() -> int:
    """A seed drawn from torch's default CPU generator (63 random bits)."""
    return int(torch.empty((), dtype=torch.int64).random_())


def _is_greedy(temperature) -> bool:
    return not isinstance(temperature, torch.Tensor) and temperature == 0


def _check_logits_arg(logits, name: str) -> None:
    """What the wrapper itself relies on (the op checks the rest)."""
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(
            f"{name} must be a 2-D (batch, vocab) tensor, got {logits.dim()} dimensions"
        )


def raise_on_bad_rows(result: BlendStepResult) -> BlendStepResult:
    """Raises ValueError naming the rows whose logits held NaN / +inf or
    were all masked (token -1). Synchronises with the device; call it where
    a host sync is acceptable, not inside a captured graph."""
    bad = (result.tokens < 0).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"blend_step: rows {bad} have NaN/+inf or fully masked logits "
            "(or out-of-range per-row parameters)"
        )
    return result


# (name in errors, index in StepArgs) of each per-row tensor slot.
_ROW_TENSORS = tuple(
    (name[: -len("_tensor")], i)
    for i, name in enumerate(StepArgs._fields)
    if name.endswith("_tensor")
)


def _check_one_device(base_logits, guide_logits, guide_to_base, base_to_guide, step_args):
    """The dispatcher sends a call to this fake kernel as soon as one argument
    is a meta tensor, even when the others are real CPU tensors; without this
    check it would return uninitialised memory as tokens."""
    named = [
        ("guide_logits", guide_logits),
        ("guide_to_base", guide_to_base),
        ("base_to_guide", base_to_guide),
    ]
    named += [(name, step_args[i]) for name, i in _ROW_TENSORS]
    for name, tensor in named:
        if isinstance(tensor, torch.Tensor) and tensor.device != base_logits.device:
            raise ValueError(
                f"{name} must be on {base_logits.device} like base_logits, got {tensor.device}"
            )


@torch.library.register_fake("blendin_ext::blend_step")
def _blend_step_fake(base_logits, guide_logits, guide_to_base, base_to_guide, *step_args):
    torch._check(base_logits.dim() == 2, lambda: "base_logits must be 2-D (batch, vocab)")
    torch._check(guide_logits.dim() == 2, lambda: "guide_logits must be 2-D (batch, vocab)")
    _check_one_device(base_logits, guide_logits, guide_to_base, base_to_guide, step_args)
    batch = base_logits.shape[0]

    def empty(dtype):
        return base_logits.new_empty((batch,), dtype=dtype)

    return (
        empty(torch.int64),
        empty(torch.bool),
        empty(torch.float32),
        empty(torch.float32),
        empty(torch.float32),
        empty(torch.float32),
    )
