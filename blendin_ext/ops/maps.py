"""Guide->base token maps in the form the op takes: the validated map and
its inverse (`GuideMap`), and a cache that builds the inverse once per raw
map tensor. Pure PyTorch: importable without the compiled extension."""

from __future__ import annotations

import weakref
from typing import NamedTuple, Optional, Union

import torch


class GuideMap(NamedTuple):
    """A validated guide->base token map with its inverse (build with
    ``guide_map`` once per model pair; ``blend_step`` accepts it directly)."""

    guide_to_base: torch.Tensor  # (Vg,) int32/int64, -1 where no base twin
    base_to_guide: torch.Tensor  # (V,) int32, -1 where no guide twin


MapArg = Union[None, torch.Tensor, GuideMap]


def guide_map(guide_to_base: torch.Tensor, base_vocab: int) -> GuideMap:
    """Validates a guide->base map (1-D integer tensor, entries in [-1, V),
    injective on its non-negative entries) and builds its inverse."""
    if not isinstance(guide_to_base, torch.Tensor) or guide_to_base.dim() != 1:
        raise ValueError("guide_to_base must be a 1-D tensor of guide->base token ids")
    if guide_to_base.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"guide_to_base must be int32 or int64, got {guide_to_base.dtype}")
    if guide_to_base.device.type == "meta":
        raise ValueError("guide_to_base is a meta tensor: it has no values to validate")
    if guide_to_base.numel() > 0:
        lo, hi = int(guide_to_base.min()), int(guide_to_base.max())
        if lo < -1 or hi >= base_vocab:
            raise ValueError(
                f"guide_to_base entries must lie in [-1, {base_vocab}), got values in [{lo}, {hi}]"
            )
    mapped = guide_to_base >= 0
    targets = guide_to_base[mapped].long()
    # a count per base id: O(V), where torch.unique sorts (seconds at V = 150k)
    if targets.numel() and int(torch.bincount(targets, minlength=base_vocab).max()) > 1:
        raise ValueError("guide_to_base must be injective: two guide tokens map to one base token")
    inverse = torch.full((base_vocab,), -1, dtype=torch.int32, device=guide_to_base.device)
    guide_ids = torch.arange(guide_to_base.numel(), device=guide_to_base.device, dtype=torch.int32)
    inverse[targets] = guide_ids[mapped]
    return GuideMap(guide_to_base.contiguous(), inverse)


def map_table(guide_to_base: MapArg) -> Optional[torch.Tensor]:
    """The (Vg,) guide->base tensor of a raw map or a GuideMap (None stays None)."""
    return guide_to_base.guide_to_base if isinstance(guide_to_base, GuideMap) else guide_to_base


def _unchecked_guide_map(guide_to_base: torch.Tensor, base_vocab: int) -> GuideMap:
    """The inverse built with tensor ops only (no host read, no data-dependent
    branch), for torch.compile tracing and meta tensors. Not validated: the
    op still checks the range of a CPU map, not its injectivity."""
    ids = torch.arange(guide_to_base.numel(), device=guide_to_base.device, dtype=torch.int32)
    slot = torch.where(guide_to_base >= 0, guide_to_base.long(), base_vocab)  # spare slot V
    inverse = torch.full((base_vocab + 1,), -1, dtype=torch.int32, device=guide_to_base.device)
    return GuideMap(guide_to_base.contiguous(), inverse.scatter(0, slot, ids)[:base_vocab])


# Raw map tensors passed to blend_step, validated and inverted once:
# id(tensor) -> (weakref to it, base_vocab, GuideMap built from a private copy).
# The entry never references the tensor itself (else the weakref could never
# fire and no entry would be freed), and a hit compares the tensor with the
# copy: version counters miss writes through `.data` or shared numpy memory,
# and one memcmp-speed pass costs far less than validating again.
_map_cache: dict = {}


def as_guide_map(
    guide_to_base: MapArg, base_vocab: int, device: Optional[torch.device] = None
) -> Optional[GuideMap]:
    """A GuideMap for a raw map tensor (validated and inverted once per
    content, then cached), a GuideMap as is, or None. `device`: where the
    logits live; a map elsewhere is refused by name."""
    if guide_to_base is None or isinstance(guide_to_base, GuideMap):
        return guide_to_base
    if not isinstance(guide_to_base, torch.Tensor):
        raise ValueError(
            "guide_to_base must be None, a GuideMap or a 1-D tensor of guide->base "
            f"token ids, got {type(guide_to_base).__name__}"
        )
    if device is not None and guide_to_base.device != device:
        raise ValueError(
            f"guide_to_base must be on {device} like base_logits, got {guide_to_base.device}"
        )
    if torch.compiler.is_compiling() or guide_to_base.device.type == "meta":
        if guide_to_base.dim() != 1 or guide_to_base.dtype not in (torch.int32, torch.int64):
            guide_map(guide_to_base, base_vocab)  # raises the error naming the map
        return _unchecked_guide_map(guide_to_base, base_vocab)
    key = id(guide_to_base)
    entry = _map_cache.get(key)
    if entry is not None:
        ref, vocab, built = entry
        copy = built.guide_to_base
        if (
            ref() is guide_to_base
            and vocab == base_vocab
            and copy.dtype == guide_to_base.dtype
            and copy.shape == guide_to_base.shape
            and torch.equal(copy, guide_to_base)
        ):
            return built
    built = guide_map(guide_to_base.clone(memory_format=torch.contiguous_format), base_vocab)
    forget = lambda _, cache=_map_cache, key=key: cache.pop(key, None)  # noqa: E731
    _map_cache[key] = (weakref.ref(guide_to_base, forget), base_vocab, built)
    return built
