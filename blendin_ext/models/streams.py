"""What the decode loop needs from a model, and adapters that provide it.

A *step model* extends a batch of sequences by some tokens and returns the
next-token logits of every row::

    logits, state = step_model.forward(input_ids, state,
                                       attention_mask=mask, position_ids=positions)

- input_ids: (B, n) int64, the new tokens only (the whole left-padded prompt
  on the first call, when state is None; usually one token afterwards).
- attention_mask: (B, past + n), 1 for real tokens, 0 for padding; it covers
  everything fed so far, not just the new tokens.
- position_ids: (B, n), each token's position among its row's real tokens.
- returns logits (B, V) of the last new position and the updated state
  (an HF cache, or anything the model likes; the loop only passes it back).
- ``truncate(state, length)`` (optional) keeps the first `length` positions;
  the cross-tokenizer guide needs it to roll back its cache.

`as_step_model` wraps a Hugging Face causal LM (`HFStepModel`) or a plain
callable ``fn(input_ids, state) -> (logits, state)`` (`FunctionStepModel`;
it also gets attention_mask / position_ids if its signature accepts them).
`TokenStream` drives one step model over a batch: prompt, cache, mask,
positions and not-yet-fed tokens.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable, List, Optional, Protocol, Tuple, runtime_checkable

import torch

from blendin_ext.models import kv_rows


@runtime_checkable
class StepModel(Protocol):
    def forward(
        self,
        input_ids: torch.Tensor,
        state: Any,
        *,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
    ) -> Tuple[torch.Tensor, Any]: ...


def _last_position(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1] if logits.dim() == 3 else logits


def cache_argument(model) -> str:
    """The keyword a transformers model's forward takes its KV cache by:
    ``cache`` (transformers 5; ``past_key_values`` is deprecated there) or
    ``past_key_values`` (4.x)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def returned_cache(output):
    """The KV cache in a transformers model output, under either name."""
    return output["cache"] if "cache" in output else output.get("past_key_values")


class HFStepModel:
    """A transformers causal LM with a KV cache. Works across the renames of
    transformers 4.x / 5.x (``past_key_values`` -> ``cache``, ``logits_to_keep``)."""

    def __init__(self, model):
        self.model = model
        params = inspect.signature(model.forward).parameters
        self._cache_arg = cache_argument(model)
        self._keep_arg = (
            "logits_to_keep"
            if "logits_to_keep" in params
            else ("num_logits_to_keep" if "num_logits_to_keep" in params else None)
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forward(self, input_ids, state, *, attention_mask, position_ids):
        kwargs = {self._cache_arg: state, "use_cache": True}
        if self._keep_arg:
            kwargs[self._keep_arg] = 1  # the loop only reads the last position
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        )
        return _last_position(out.logits), returned_cache(out)

    def truncate(self, state, length: int):
        removed = state.get_seq_length() - length
        if removed > 0:
            # A negative argument removes that many tokens in every version
            # (4.x: crop(max_length), negative = from the end; 5.x: negative only).
            state.crop(-removed)
        return state

    # Row edits for a continuous batch (blendin_ext.models.kv_rows); each
    # returns the state, or None for a cache it cannot edit (the caller
    # then rebuilds the rows from their ids).
    def select_rows(self, state, index):
        return _edited(state, kv_rows.select_rows, index, kv_rows.supports_row_select)

    def append_rows(self, state, count):
        return _edited(state, kv_rows.append_rows, count)

    def drop_leading_columns(self, state, count):
        return _edited(state, kv_rows.drop_leading_columns, count)


def _edited(state, edit, arg, supported=kv_rows.supports_row_edits):
    if not supported(state):
        return None
    edit(state, arg)
    return state


class FunctionStepModel:
    """A plain callable ``fn(input_ids, state[, attention_mask=, position_ids=])``
    returning ``(logits, state)`` or just logits (then the state stays None).
    ``truncate`` is taken from ``fn.truncate`` when it has one."""

    def __init__(self, fn: Callable, device: Optional[torch.device] = None):
        self.fn = fn
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):  # builtins without a signature
            params = {}
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
        self._extra = {
            name for name in ("attention_mask", "position_ids") if takes_kwargs or name in params
        }
        truncate = getattr(fn, "truncate", None)
        if truncate is not None:
            self.truncate = truncate

    def forward(self, input_ids, state, *, attention_mask, position_ids):
        extra = {"attention_mask": attention_mask, "position_ids": position_ids}
        out = self.fn(input_ids, state, **{k: v for k, v in extra.items() if k in self._extra})
        logits, state = out if isinstance(out, tuple) else (out, None)
        return _last_position(logits), state


def _is_hf_model(obj) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is optional
        return False
    return isinstance(obj, PreTrainedModel)


def as_step_model(model, device: Optional[torch.device] = None):
    """The step-model view of an HF causal LM, a StepModel, or a callable."""
    if _is_hf_model(model):
        return HFStepModel(model)
    if isinstance(model, (HFStepModel, FunctionStepModel)) or (
        isinstance(model, StepModel) and not isinstance(model, torch.nn.Module)
    ):
        return model
    if callable(model):
        return FunctionStepModel(model, device)
    raise TypeError(
        f"expected a Hugging Face causal LM, a StepModel or a callable "
        f"(input_ids, state) -> logits, got {type(model).__name__}"
    )


def model_device(step_model) -> torch.device:
    return getattr(step_model, "device", torch.device("cpu"))


class TokenStream:
    """One model's running view of a batch of rows.

    Tokens are *pushed* (cheap, no forward) and *fed* in one forward when
    logits are asked for; that is what lets a lazy guide skip steps and
    catch up later. The attention mask lives in a preallocated buffer whose
    unwritten columns are 1, so a decode step writes nothing to it.
    """

    def __init__(self, model, pad_id: int, device: Optional[torch.device] = None):
        self.model = as_step_model(model, device)
        self.pad_id = pad_id
        self.device = device if device is not None else model_device(self.model)
        self.forwards = 0  # model calls
        self.tokens_fed = 0  # token slots fed, padding included (rows x positions)
        self.forward_seconds = 0.0
        self.time_forwards = False  # set by benchmarks; syncs CUDA around each forward
        self.state, self.batch, self._pending = None, 0, []  # until `start`

    def fresh(self) -> "TokenStream":
        """A stream over the same model with no batch yet (one per decode
        call, so that calls do not share state)."""
        stream = TokenStream(self.model, self.pad_id, self.device)
        stream.time_forwards = self.time_forwards
        return stream

    def start(self, prompt_ids: List[List[int]], capacity: int) -> None:
        """Left-pads the prompts; feeds nothing yet. `capacity` is a hint for
        how many tokens per row will follow."""
        if any(len(ids) == 0 for ids in prompt_ids):
            raise ValueError("every prompt needs at least one token")
        batch, width = len(prompt_ids), max(len(ids) for ids in prompt_ids)
        ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        self._mask = torch.ones(
            (batch, width + max(capacity, 1)), dtype=torch.long, device=self.device
        )
        for row, row_ids in enumerate(prompt_ids):
            ids[row, width - len(row_ids) :] = torch.tensor(row_ids, dtype=torch.long)
            self._mask[row, : width - len(row_ids)] = 0
        reserve = getattr(self.model, "reserve", None)
        if reserve is not None:  # a static cache (blendin_ext.models.compiled)
            reserve(self._mask.shape[1])
        self.state = None
        self.batch = batch
        self._fed = 0  # columns the model has seen
        self._cols = width  # columns pushed (fed + pending)
        self._pending = [ids.to(self.device)]
        self._pending_has_holes = True  # prompt padding: positions need a cumsum
        self._next_pos = torch.zeros(batch, dtype=torch.long, device=self.device)
        self._last_logits = None

    @property
    def length(self) -> int:
        """Columns pushed so far (prompt width + tokens pushed)."""
        return self._cols

    def push(self, tokens: torch.Tensor, mask: Optional[torch.Tensor] = None) -> None:
        """Appends (B,) or (B, n) tokens to every row; `mask` (same shape) marks
        holes (0) for rows that append fewer tokens than others."""
        tokens = tokens.reshape(self.batch, -1)
        n = tokens.shape[1]
        if self._cols + n > self._mask.shape[1]:
            grown = torch.ones(
                (self.batch, 2 * (self._cols + n)), dtype=torch.long, device=self.device
            )
            grown[:, : self._cols] = self._mask[:, : self._cols]
            self._mask = grown
        if mask is not None:
            self._mask[:, self._cols : self._cols + n] = mask.reshape(self.batch, n)
            self._pending_has_holes = True
        self._pending.append(tokens)
        self._cols += n

    def logits(self) -> torch.Tensor:
        """(B, V) next-token logits after everything pushed; one forward over
        all pending tokens, none if nothing is pending."""
        if not self._pending:
            return self._last_logits
        ids = self._pending[0] if len(self._pending) == 1 else torch.cat(self._pending, 1)
        n = ids.shape[1]
        if self._pending_has_holes:
            new_mask = self._mask[:, self._fed : self._cols]
            positions = (self._next_pos[:, None] + new_mask.cumsum(1) - 1).clamp_(min=0)
            self._next_pos = self._next_pos + new_mask.sum(1)
        else:
            positions = self._next_pos[:, None] + torch.arange(n, device=self.device)
            self._next_pos = self._next_pos + n
        started = time.perf_counter()
        self._last_logits, self.state = self.model.forward(
            ids, self.state, attention_mask=self._mask[:, : self._cols], position_ids=positions
        )
        if self.time_forwards:
            if self._last_logits.is_cuda:
                torch.cuda.synchronize(self._last_logits.device)
            self.forward_seconds += time.perf_counter() - started
        self.forwards += 1
        self.tokens_fed += ids.numel()
        self._fed = self._cols
        self._pending.clear()
        self._pending_has_holes = False
        return self._last_logits

    def truncate(self, length: int) -> None:
        """Keeps the first `length` columns (prompt included) and forgets the
        rest, pending tokens too. Needs a model with ``truncate``."""
        if not 0 <= length <= self._fed:
            raise ValueError(f"truncate length must lie in [0, {self._fed}], got {length}")
        truncate = getattr(self.model, "truncate", None)
        if truncate is None:
            raise TypeError(f"{type(self.model).__name__} cannot truncate its state")
        self._pending.clear()
        self.state = truncate(self.state, length)
        self._mask[:, length:] = 1
        self._next_pos = self._mask[:, :length].sum(1)
        self._fed = self._cols = length
        self._pending_has_holes = False
        self._last_logits = None

    # ---------------------------------------------- rows of a continuous batch
    def can_edit_rows(self) -> bool:
        """Whether keep_rows / add_rows / drop_leading_columns work here
        (the model edits its state and nothing is pending); otherwise
        restart the stream with `start`."""
        return (
            getattr(self.model, "select_rows", None) is not None
            and not self._pending
            and kv_rows.supports_row_edits(self.state)
        )

    def _edit_state(self, op: str, arg) -> None:
        state = getattr(self.model, op)(self.state, arg)
        if state is None:
            raise TypeError(f"{type(self.model).__name__} cannot edit the rows of its state")
        self.state = state

    def can_keep_rows(self) -> bool:
        """Whether keep_rows works here (pending tokens are fine: they are
        selected too)."""
        return getattr(self.model, "select_rows", None) is not None and kv_rows.supports_row_select(
            self.state
        )

    def keep_rows(self, index: List[int]) -> None:
        """Keeps rows `index` (at least one), in that order, with their cache
        and their pending tokens."""
        if self.state is not None:
            self._edit_state("select_rows", index)
        rows = torch.tensor(index, dtype=torch.long, device=self.device)
        self._pending = [ids.index_select(0, rows) for ids in self._pending]
        self._mask = self._mask.index_select(0, rows)
        self._next_pos = self._next_pos.index_select(0, rows)
        if self._last_logits is not None:
            self._last_logits = self._last_logits.index_select(0, rows.to(self._last_logits.device))
        self.batch = len(index)

    def add_rows(self, count: int) -> None:
        """Appends `count` empty rows: every column so far is a hole (mask
        0) for them, so they start at position 0 when they are fed."""
        if self.state is not None:
            self._edit_state("append_rows", count)
        mask = torch.ones((count, self._mask.shape[1]), dtype=torch.long, device=self.device)
        mask[:, : self._cols] = 0
        self._mask = torch.cat([self._mask, mask])
        self._next_pos = torch.cat([self._next_pos, self._next_pos.new_zeros(count)])
        if self._last_logits is not None:
            empty = self._last_logits.new_zeros((count,) + self._last_logits.shape[1:])
            self._last_logits = torch.cat([self._last_logits, empty])
        self.batch += count

    def leading_holes(self) -> int:
        """Leading columns that are holes in every row (rows that left)."""
        real = self._mask[:, : self._fed].any(0).nonzero()
        return int(real[0]) if real.numel() else self._fed

    def drop_leading_columns(self, count: int) -> None:
        """Forgets the first `count` fed columns (holes in every row)."""
        if count <= 0:
            return
        self._edit_state("drop_leading_columns", count)
        self._mask = self._mask[:, count:].contiguous()
        self._fed -= count
        self._cols -= count
