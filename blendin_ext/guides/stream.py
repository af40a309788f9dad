"""The guide model's side of the decode loop.

The loop talks to the guide only through `GuideStream`, so that a guide
with another tokenizer can keep itself in sync (twins and re-tokenised
stretches) while the loop stays the same. `SameTokenizerGuide` is the token-level version for
pairs that share a vocabulary.

Writing a cross-tokenizer `GuideStream` (the contract in detail):

- ``start(prompts, capacity)``: build the guide's own prompt ids from the raw
  prompt strings (``prompts.chat_prompt_ids`` applies its chat template) and
  hand them to a `TokenStream`; run nothing yet.
- ``push(tokens, host_tokens, live)``: the base-vocabulary token just chosen
  for every row, as a (B,) device tensor and as host ints (the loop has them
  anyway, so decoding text costs no extra sync), and which rows are still
  generating. Cheap, no forward: a cross-tokenizer guide appends the token
  to its rows and remembers that its view is stale.
- ``logits()``: (B, Vg) next-token logits of the guide for every row after
  everything pushed. In eager mode the loop calls it every step; in lazy
  mode only at steps where some live row intervenes, so it must catch up
  any number of pushed tokens in one forward. A cross-tokenizer guide
  derives each row's guide ids (prompt + the new tokens' twins, or the
  re-tokenised text of stretches without twins), finds the longest common token
  prefix with what its cache holds, rolls back with
  ``TokenStream.truncate(length)`` (``DynamicCache.crop`` under the hood; one
  length for the batch, so the shortest prefix over the rows) and pushes
  each row's remaining ids right-aligned with ``TokenStream.push(ids, mask)``,
  mask 0 in the holes of shorter rows (first), so that every row that feeds
  has a real token in the last column, whose logits ``TokenStream.logits()``
  returns; rows that feed nothing keep their previous logits
  (`blendin_ext.guides.synced.SyncedGuide` does all this; the
  cross-tokenizer guide adds the guide ids, `blendin_ext.guides.token_sync`).
- ``guide_to_base``: None when guide ids are base ids, else a
  `blendin_ext.GuideMap` (build it once with ``blendin_ext.guide_map``); the
  loop passes it to every blend_step call with real guide logits.
- ``top_base_token(logits)``: (B,) base id of the guide's favourite mapped
  token (``mapped_argmax``), used to say which model won an intervention.
- ``stop_token_ids()``: base ids that end a row under the guide's convention.
- counters ``forwards``, ``tokens_fed``, ``forward_seconds`` (delegate to
  the `TokenStream`) and ``time_forwards`` (a flag the benchmarks set).

Optional features have a default on `GuideStream` that fits a guide of the
base's vocabulary (no map, no statistics, rows that cannot be dropped), so
a guide overrides only what it supports; the loop and the vLLM plug-in
call them without asking: ``for_call()``, ``can_keep_rows()`` /
``keep_rows(rows)``, ``coverage_by_row()``, ``twin_share_by_row(rows)``,
``map_report``, ``guide_sync``, ``rebuilds``. `guide_row_stats` reads a
row's statistics, `pair_logits` fits the guide's logits to the base's.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import List, Optional, Sequence, Set, Tuple

import torch

from blendin_ext.models.prompts import (
    base_prompt_ids,
    chat_prompt_ids,
    pad_token_id,
    stop_token_ids,
)
from blendin_ext.models.streams import TokenStream
from blendin_ext.ops.maps import GuideMap


def mapped_argmax(logits: torch.Tensor, guide_to_base: Optional[GuideMap]) -> torch.Tensor:
    """(B,) base id of each row's highest guide logit among guide tokens that
    have a base twin; ties go to the smallest base id, as in the op."""
    if guide_to_base is None:
        return logits.argmax(-1)
    g2b = guide_to_base.guide_to_base.to(logits.device).long()
    masked = logits.masked_fill(g2b < 0, float("-inf"))
    top = masked == masked.amax(-1, keepdim=True)  # amax: ~10x faster than max()
    none = torch.iinfo(torch.int64).max
    best = torch.where(top & (g2b >= 0), g2b, none).min(-1).values
    return best.masked_fill(best == none, -1)  # a row with no mapped logit


def fit_vocab(logits: torch.Tensor, vocab: int) -> torch.Tensor:
    """Guide logits of a model whose output layer is padded differently from
    the base's (same tokenizer): drop extra columns or pad with -inf."""
    if logits.shape[-1] > vocab:
        return logits[:, :vocab].contiguous()
    pad = logits.new_full((logits.shape[0], vocab - logits.shape[-1]), float("-inf"))
    return torch.cat([logits, pad], -1)


def pair_logits(
    base_logits: torch.Tensor, guide_logits: torch.Tensor, guide_to_base: Optional[GuideMap]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(base, guide) logits as one op call takes them: without a map (the
    same tokenizer) the guide's are fitted to the base's width (`fit_vocab`),
    and logits of two dtypes or devices both become float32 on the base's
    device (the op takes one dtype; float32 loses nothing of either)."""
    if guide_to_base is None and guide_logits.shape[-1] != base_logits.shape[-1]:
        guide_logits = fit_vocab(guide_logits, base_logits.shape[-1])
    if guide_logits.dtype != base_logits.dtype or guide_logits.device != base_logits.device:
        base_logits = base_logits.float()
        guide_logits = guide_logits.to(base_logits.device, torch.float32)
    return base_logits, guide_logits


class GuideStream(ABC):
    """The guide as the decode loop and the vLLM plug-in see it (contract:
    module docstring). Every feature either of them uses is declared here;
    the optional ones have the defaults of a guide that shares the base's
    vocabulary and keeps no statistics. A subclass that can drop rows
    overrides both `can_keep_rows` and `keep_rows`."""

    guide_to_base: Optional[GuideMap] = None
    stream: TokenStream  # the guide model's token stream, for the counters
    # The vocabulary map's report (blendin_ext.guides.vocab_map.MapReport)
    # when the guide built its map from both tokenizers, else None.
    map_report = None
    # How a guide with another tokenizer follows the chosen tokens: "tokens"
    # (feed their twins) or "text" (re-tokenise); the loop sets it from
    # DecodeOptions.guide_sync before `start`. Guides whose ids are base ids
    # feed them as they are and ignore it.
    guide_sync: str = "tokens"
    # Times the guide rebuilt its cache from its rows' ids (SyncedGuide);
    # guides that never rebuild keep 0.
    rebuilds: int = 0

    @abstractmethod
    def start(self, prompts: Sequence[str], capacity: int) -> None: ...

    @abstractmethod
    def push(self, tokens: torch.Tensor, host_tokens: List[int], live: List[bool]) -> None: ...

    @abstractmethod
    def logits(self) -> torch.Tensor: ...

    def top_base_token(self, logits: torch.Tensor) -> torch.Tensor:
        return mapped_argmax(logits, self.guide_to_base)

    def for_call(self) -> "GuideStream":
        """The guide for one generate / stream call, which `start`s it and
        changes its state; by default this same object (a guide that holds
        per-call state overrides it, as `SameTokenizerGuide` does)."""
        return self

    def can_keep_rows(self) -> bool:
        """Whether ``keep_rows`` works now (the loop drops finished rows
        only when it does); by default False."""
        return False

    def keep_rows(self, rows: Sequence[int]) -> None:
        """Keeps batch rows `rows`, in that order (finished rows leave)."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot drop rows (its can_keep_rows() is False)"
        )

    def coverage_by_row(self) -> Optional[List[Optional[float]]]:
        """Per row, the mean share of the guide's probability on tokens with
        a base twin over the guide runs while the row was live (None for a
        row the guide never ran for); None: the guide keeps no coverage (by
        default: its ids are base ids)."""
        return None

    def twin_share_by_row(self, rows: Sequence[int]) -> List[Optional[float]]:
        """For rows `rows`, the share of each row's guide ids (after its
        prompt) fed as the chosen base tokens' twins (None: no ids yet, or,
        by default, a guide fed the base ids themselves)."""
        return [None] * len(rows)

    @abstractmethod
    def stop_token_ids(self) -> Set[int]: ...

    @property
    def forwards(self) -> int:
        return self.stream.forwards

    @property
    def tokens_fed(self) -> int:
        return self.stream.tokens_fed

    @property
    def forward_seconds(self) -> float:
        return self.stream.forward_seconds

    @property
    def time_forwards(self) -> bool:
        return self.stream.time_forwards

    @time_forwards.setter
    def time_forwards(self, value: bool) -> None:
        self.stream.time_forwards = value


class SameTokenizerGuide(GuideStream):
    """A guide that shares the base's vocabulary: every chosen token is fed
    to it as is. `chat` wraps prompts in the tokenizer's chat template."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        system_prompt: Optional[str] = None,
        chat: bool = True,
        device: Optional[torch.device] = None,
    ):
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.chat = chat
        self.model = model
        self.stream = TokenStream(model, pad_token_id(tokenizer), device)

    def prompt_ids(self, prompts: Sequence[str]) -> List[List[int]]:
        if self.chat:
            return chat_prompt_ids(self.tokenizer, prompts, self.system_prompt)
        return base_prompt_ids(self.tokenizer, prompts)

    def start(self, prompts, capacity):
        self.stream.start(self.prompt_ids(prompts), capacity)

    def push(self, tokens, host_tokens, live):
        self.stream.push(tokens)

    def logits(self):
        return self.stream.logits()

    def for_call(self) -> "SameTokenizerGuide":
        """A shallow copy with a fresh TokenStream: the model, tokenizer and
        map are shared, `start` resets the rest."""
        guide = copy.copy(self)
        guide.stream = self.stream.fresh()
        return guide

    def can_keep_rows(self):
        return self.stream.can_keep_rows()

    def keep_rows(self, index):
        self.stream.keep_rows(index)

    def stop_token_ids(self):
        return stop_token_ids(self.tokenizer, self.model, chat=self.chat)


@dataclass(frozen=True)
class GuideRowStats:
    """A row's guide statistics (None where the guide keeps none)."""

    map_coverage: Optional[float]  # see GuideStream.coverage_by_row
    twin_share: Optional[float]  # see GuideStream.twin_share_by_row


def guide_row_stats(guide: GuideStream, rows: Sequence[int]) -> List[GuideRowStats]:
    """The statistics of the guide's rows `rows`, in that order: what the
    decode loop and the vLLM plug-in record for a row, read while the guide
    still holds it (before it leaves the batch, or at the end). Brings only
    these rows' twin shares up to date."""
    rows = list(rows)
    if not rows:
        return []
    coverage = guide.coverage_by_row()
    shares = guide.twin_share_by_row(rows)
    return [
        GuideRowStats(map_coverage=None if coverage is None else coverage[row], twin_share=share)
        for row, share in zip(rows, shares)
    ]
