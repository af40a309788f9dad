"""An optional compiled step model, gpt-fast style (experimental).

`CompiledHFStepModel` gives a transformers causal LM a static KV cache
(`transformers.StaticCache`, sized once per call for prompt + budget) and
runs every one-token forward through `torch.compile`; the prompt and any
multi-token catch-up (a lazy guide) run eagerly into the same cache. The
attention mask is padded to the cache length with ones (positions beyond a
row's last token are never attended: the causal mask stops at the current
position), so every one-token call has the same shapes and the graph is
compiled once per batch size and cache length. Cache lengths are rounded
up to a multiple of `CACHE_BUCKET` so that calls of similar lengths share
a graph.

The first call pays the compilation (tens of seconds to minutes on a CPU;
inductor needs a C++ compiler there). The static cache alone gives the
eager tokens; compiled bf16 kernels keep fused intermediates in float32, so
bf16 tokens may differ after a near-tie. Packed linear layers (packing.py)
stay packed: inductor fuses what lies between them. A static
cache has a fixed batch, so finished rows stay in it (the loop's compaction
turns itself off).
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from blendin_ext.models.streams import HFStepModel

CACHE_BUCKET = 256


class CompiledHFStepModel(HFStepModel):
    """An HF causal LM with a static cache and a compiled one-token forward.
    backend: torch.compile's backend ("inductor"), or None for the static
    cache alone (no compilation: what the fast tests check)."""

    def __init__(self, model, backend: Optional[str] = "inductor"):
        super().__init__(model)
        self.backend = backend
        self._compiled = (
            model.forward if backend is None else torch.compile(model.forward, backend=backend)
        )
        self._reserved: Optional[tuple] = None

    @property
    def config(self):
        return self.model.config

    @property
    def generation_config(self):
        return getattr(self.model, "generation_config", None)

    def reserve(self, length: int) -> None:
        """Called by TokenStream.start: the next state holds `length`
        positions per row, plus half as many again (a cross-tokenizer guide
        may need more tokens than the base generates), rounded up."""
        length += length // 2
        self._reserved = -(-length // CACHE_BUCKET) * CACHE_BUCKET

    def forward(self, input_ids, state, *, attention_mask, position_ids):
        from transformers import StaticCache

        if self._reserved is None:
            raise RuntimeError("CompiledHFStepModel: reserve(length) before a new batch")
        total = self._reserved
        if state is None:  # the batch size comes from the first forward
            state = StaticCache(config=self.model.config, max_cache_len=total)
        if attention_mask.shape[1] > total:
            raise RuntimeError(
                f"the static cache holds {total} positions, the batch needs "
                f"{attention_mask.shape[1]}"
            )
        mask = attention_mask.new_ones((attention_mask.shape[0], total))
        mask[:, : attention_mask.shape[1]] = attention_mask
        run = self._compiled if input_ids.shape[1] == 1 else self.model
        out = run(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            **{self._cache_arg: state, "use_cache": True},
            **({self._keep_arg: 1} if self._keep_arg else {}),
        )
        logits = out.logits
        return (logits[:, -1] if logits.dim() == 3 else logits).clone(), state

    def truncate(self, state, length: int):
        removed = int(state.get_seq_length()) - length
        if removed > 0:
            state.crop(-removed)  # the stale positions are overwritten later
        return state

    # A static cache has a fixed batch: no row edits.
    select_rows = append_rows = drop_leading_columns = None


def compiled_step_model(model, compile: Union[bool, str]):
    """The model as the loop should drive it: `compile` False -> as is;
    True or a backend name -> a CompiledHFStepModel (HF models only)."""
    if compile is False or compile is None:
        return model
    from blendin_ext.models.streams import _is_hf_model

    if not _is_hf_model(model):
        raise TypeError(f"compile needs a transformers causal LM, got {type(model).__name__}")
    return CompiledHFStepModel(model, "inductor" if compile is True else compile)
