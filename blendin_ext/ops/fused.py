"""Python face of the fused op: the typed wrapper, the raw call every
caller shares, and the fake (meta) kernel that lets torch.compile trace it.

Importing this module loads the compiled extension (``blendin_ext._C``),
which registers ``torch.ops.blendin_ext.blend_step``. Semantics: README.md
beside this file.
"""
from __future__ import annotations

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


def run_step(base_logits: torch.Tensor, guide_logits: torch.Tensor, maps: Optional[GuideMap],
             args: StepArgs) -> BlendStepResult:
    """The raw op on prepared arguments: no checks, no allocation beyond the
    op's own; what hot loops call once per decode step."""
    return BlendStepResult(*torch.ops.blendin_ext.blend_step(
        base_logits, guide_logits,
        None if maps is None else maps.guide_to_base,
        None if maps is None else maps.base_to_guide,
        *args))


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
    seed: RowValue = 0,
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
        draws independent of its position in the batch.
    """
    args = StepArgs.build(gamma=gamma, alpha=alpha, agree_bonus=agree_bonus,
                          temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                          offset=offset)
    vocab = base_logits.shape[-1] if base_logits.dim() == 2 else 0
    return run_step(base_logits, guide_logits, as_guide_map(guide_to_base, vocab), args)


def raise_on_bad_rows(result: BlendStepResult) -> BlendStepResult:
    """Raises ValueError naming the rows whose logits held NaN / +inf or
    were all masked (token -1). Synchronises with the device; call it where
    a host sync is acceptable, not inside a captured graph."""
    bad = (result.tokens < 0).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"blend_step: rows {bad} have NaN/+inf or fully masked logits "
                         "(or out-of-range per-row parameters)")
    return result


@torch.library.register_fake("blendin_ext::blend_step")
def _blend_step_fake(base_logits, guide_logits, guide_to_base, base_to_guide, *step_args):
    torch._check(base_logits.dim() == 2, lambda: "base_logits must be 2-D (batch, vocab)")
    torch._check(guide_logits.dim() == 2, lambda: "guide_logits must be 2-D (batch, vocab)")
    batch = base_logits.shape[0]

    def empty(dtype):
        return base_logits.new_empty((batch,), dtype=dtype)

    return (empty(torch.int64), empty(torch.bool), empty(torch.float32), empty(torch.float32),
            empty(torch.float32), empty(torch.float32))
