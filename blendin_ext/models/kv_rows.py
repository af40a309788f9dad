"""Row surgery on a Hugging Face KV cache: keep / reorder rows, append empty
rows, drop leading columns.

A guide serving a continuous batch (the vLLM plug-in) sees requests join and
leave between steps. Rather than re-running every remaining row's prompt,
its `TokenStream` edits the batched cache in place: the K/V tensors of every
layer are (batch, heads, length, head_dim), so a row change is an index or a
concatenation along dim 0 and a column change a slice along dim 2.

Only full-attention layers can be edited this way (a sliding-window layer
keeps the last W positions and forgets which columns they were); for any
other cache `supports_row_edits` is False and callers rebuild from token ids.
"""

from __future__ import annotations

from typing import Iterator, List, Tuple

import torch


def _kv_slots(cache) -> Iterator[Tuple[object, str]]:
    """(holder, attribute) of every K/V tensor: transformers >= 4.56 keeps
    them on ``cache.layers[i].keys/values``, older ones in two lists."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        for layer in layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel() > 0:
                yield layer, "keys"
                yield layer, "values"
        return
    for name in ("key_cache", "value_cache"):
        tensors = getattr(cache, name)
        for i in range(len(tensors)):
            yield _ListSlot(tensors, i), "tensor"


class _ListSlot:
    """Lets a list element be read and written like an attribute."""

    def __init__(self, items: list, index: int):
        self.items, self.index = items, index

    @property
    def tensor(self):
        return self.items[self.index]

    @tensor.setter
    def tensor(self, value):
        self.items[self.index] = value


def _every_layer(cache, layer_ok) -> bool:
    """Whether `layer_ok` holds for every layer of `cache` (legacy caches
    without layers: whether they hold plain key/value lists)."""
    if cache is None:
        return True
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return all(hasattr(layer, "keys") and layer_ok(layer) for layer in layers)
    return hasattr(cache, "key_cache") and hasattr(cache, "value_cache")


def supports_row_edits(cache) -> bool:
    """Whether every layer of `cache` is a plain full-attention K/V store."""
    return _every_layer(cache, lambda layer: not getattr(layer, "is_sliding", False))


def supports_row_select(cache) -> bool:
    """Whether rows of `cache` can be kept / reordered (`select_rows`): true
    of every dynamic K/V layer, sliding-window ones included (a row choice
    touches the batch dimension only); not of a static (compiled) cache,
    whose batch size is fixed."""
    return _every_layer(cache, lambda layer: not getattr(layer, "is_compileable", False))


def _edit(cache, fn) -> None:
    for holder, attr in _kv_slots(cache):
        setattr(holder, attr, fn(getattr(holder, attr)))


def select_rows(cache, index: List[int]) -> None:
    """Keeps rows `index` of the batch, in that order."""
    if not index:
        raise ValueError("select_rows needs at least one row")
    rows = None
    for holder, attr in _kv_slots(cache):
        tensor = getattr(holder, attr)
        if rows is None:
            rows = torch.tensor(index, dtype=torch.long, device=tensor.device)
        setattr(holder, attr, tensor.index_select(0, rows))


def append_rows(cache, count: int) -> None:
    """Appends `count` rows of zeros; the caller masks their columns out."""
    _edit(cache, lambda t: torch.cat([t, t.new_zeros((count,) + t.shape[1:])], 0))


def drop_leading_columns(cache, count: int) -> None:
    """Forgets the first `count` positions of every row (masked in all rows)."""
    _edit(cache, lambda t: t[:, :, count:].contiguous())
