"""Python face of the fused ops: typed wrappers, fake (meta) kernels for
torch.compile, and the vocabulary-map helpers.

Hot loops that have already built their arguments may call
``torch.ops.blendin_ext.blend_step`` directly; ``blend_step`` below only
turns Python-friendly arguments into the schema's tensor-or-scalar pairs.
"""
from __future__ import annotations

import weakref
from typing import NamedTuple, Optional, Union

import torch

try:
    from blendin_ext import _C  # noqa: F401  (loading it registers the ops)
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "blendin_ext._C is not built; run `pip install --no-build-isolation -e .` "
        "in the project root"
    ) from exc

RowValue = Union[float, int, torch.Tensor]


class BlendStepResult(NamedTuple):
    """Per-row outputs of one step, each of shape (B,)."""

    tokens: torch.Tensor          # int64 base-vocabulary token, -1 for a bad row
    intervened: torch.Tensor      # bool, base top-1 prob < gamma
    alpha: torch.Tensor           # float32 guide weight used (0 where not intervened)
    base_top_prob: torch.Tensor   # float32 c_b = max p_base
    guide_top_prob: torch.Tensor  # float32 c_g = max p_guide (mapped, renormalised)
    agree: torch.Tensor           # float32 p_base(argmax p_guide)


class GuideMap(NamedTuple):
    """A validated guide->base token map with its inverse (build with
    ``guide_map`` once per model pair; ``blend_step`` accepts it directly)."""

    guide_to_base: torch.Tensor  # (Vg,) int32/int64, -1 where no base twin
    base_to_guide: torch.Tensor  # (V,) int32, -1 where no guide twin


def guide_map(guide_to_base: torch.Tensor, base_vocab: int) -> GuideMap:
    """Validates a guide->base map (1-D integer tensor, entries in [-1, V),
    injective on its non-negative entries) and builds its inverse."""
    if not isinstance(guide_to_base, torch.Tensor) or guide_to_base.dim() != 1:
        raise ValueError("guide_to_base must be a 1-D tensor of guide->base token ids")
    if guide_to_base.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"guide_to_base must be int32 or int64, got {guide_to_base.dtype}")
    if guide_to_base.numel() > 0:
        lo, hi = int(guide_to_base.min()), int(guide_to_base.max())
        if lo < -1 or hi >= base_vocab:
            raise ValueError(
                f"guide_to_base entries must lie in [-1, {base_vocab}), got values in [{lo}, {hi}]"
            )
    mapped = guide_to_base >= 0
    targets = guide_to_base[mapped].long()
    if targets.numel() != torch.unique(targets).numel():
        raise ValueError("guide_to_base must be injective: two guide tokens map to one base token")
    inverse = torch.full((base_vocab,), -1, dtype=torch.int32, device=guide_to_base.device)
    guide_ids = torch.arange(guide_to_base.numel(), device=guide_to_base.device, dtype=torch.int32)
    inverse[targets] = guide_ids[mapped]
    return GuideMap(guide_to_base.contiguous(), inverse)


# Inverses of raw map tensors passed to blend_step, built once per tensor
# version: id(tensor) -> (weakref, version, base_vocab, GuideMap).
_map_cache: dict = {}


def _as_guide_map(guide_to_base, base_vocab: int) -> Optional[GuideMap]:
    if guide_to_base is None or isinstance(guide_to_base, GuideMap):
        return guide_to_base
    entry = _map_cache.get(id(guide_to_base))
    if entry is not None:
        ref, version, vocab, built = entry
        if ref() is guide_to_base and version == guide_to_base._version and vocab == base_vocab:
            return built
    built = guide_map(guide_to_base, base_vocab)
    key = id(guide_to_base)
    forget = lambda _, cache=_map_cache, key=key: cache.pop(key, None)  # noqa: E731
    _map_cache[key] = (weakref.ref(guide_to_base, forget), guide_to_base._version, base_vocab,
                       built)
    return built


def _split(value: RowValue, default):
    """A per-row parameter as the schema's (tensor or None, scalar) pair."""
    if isinstance(value, torch.Tensor):
        return value, default
    return None, value


def blend_step(
    base_logits: torch.Tensor,
    guide_logits: torch.Tensor,
    *,
    guide_to_base: Union[None, torch.Tensor, GuideMap] = None,
    gamma: RowValue = 0.4,
    alpha: Union[str, RowValue] = "auto",
    agree_bonus: float = 0.1,
    temperature: RowValue = 0.0,
    top_k: Optional[RowValue] = None,
    top_p: Optional[RowValue] = None,
    seed: RowValue = 0,
    offset: RowValue = 0,
) -> BlendStepResult:
    """One BlendIn decode step over a batch (semantics: README.md).

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
    if isinstance(alpha, str):
        if alpha != "auto":
            raise ValueError(f'alpha must be "auto", a number in [0, 1] or a tensor, got {alpha!r}')
        alpha = -1.0
    elif not isinstance(alpha, torch.Tensor) and not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (or be \"auto\"), got {alpha}")
    maps = _as_guide_map(guide_to_base, base_logits.shape[-1] if base_logits.dim() == 2 else 0)
    out = torch.ops.blendin_ext.blend_step(
        base_logits,
        guide_logits,
        None if maps is None else maps.guide_to_base,
        None if maps is None else maps.base_to_guide,
        *_split(gamma, 0.0),
        *_split(alpha, -1.0),
        float(agree_bonus),
        *_split(temperature, 0.0),
        *_split(0 if top_k is None else top_k, 0),
        *_split(1.0 if top_p is None else top_p, 1.0),
        *_split(seed, 0),
        *_split(offset, 0),
    )
    return BlendStepResult(*out)


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
def _blend_step_fake(base_logits, guide_logits, guide_to_base, base_to_guide, gamma_tensor,
                     gamma_value, alpha_tensor, alpha_value, agree_bonus, temperature_tensor,
                     temperature_value, top_k_tensor, top_k_value, top_p_tensor, top_p_value,
                     seed_tensor, seed_value, offset_tensor, offset_value):
    torch._check(base_logits.dim() == 2, lambda: "base_logits must be 2-D (batch, vocab)")
    torch._check(guide_logits.dim() == 2, lambda: "guide_logits must be 2-D (batch, vocab)")
    batch = base_logits.shape[0]

    def empty(dtype):
        return base_logits.new_empty((batch,), dtype=dtype)

    return (empty(torch.int64), empty(torch.bool), empty(torch.float32), empty(torch.float32),
            empty(torch.float32), empty(torch.float32))
