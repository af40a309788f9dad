"""A guide whose tokenizer differs from the base's.

The loop chooses base-vocabulary tokens; the guide must be fed its own ids.
By default (``guide_sync="tokens"``, `blendin_ext.guides.token_sync`) each
base token with a guide twin is fed as that twin, and only stretches of
tokens without twins are decoded and re-tokenised; with
``guide_sync="text"`` the whole generated text is re-tokenised at every
guide run. Either way the guide's KV cache is rolled back to the longest
common token prefix with what it already holds and only the rest is fed
(one forward for the batch); a re-tokenised open stretch may change its
last few guide tokens (" Par" + "is" -> " Paris"), which is why the
rollback exists.

The guide's logits come back in its own vocabulary; the op receives the
guide->base map (`blendin_ext.guides.vocab_map`) and mixes only tokens that have a
twin. The share of the guide's probability on such tokens is recorded every
time the guide runs (``coverage_by_row``): where it is low, the guide's
advice is mostly lost in translation. ``twin_share_by_row`` gives the share
of each row's guide ids that were fed as twins.

The roll-back-and-feed machinery (right-aligned blocks with holes, rows
joining and leaving) is `blendin_ext.guides.synced.SyncedGuide`'s; this
class supplies the ids each row should hold and the map.
"""

from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Set

import torch

from blendin_ext.guides.synced import SyncedGuide
from blendin_ext.guides.token_sync import TOKENS, RowSync, TwinSync
from blendin_ext.guides.vocab_map import TokenBytes, mapped_mask, mapped_mass, vocab_map
from blendin_ext.models.prompts import stop_token_ids
from blendin_ext.ops.maps import GuideMap, guide_map
from blendin_ext.ops.validate import check_guide_sync


class CrossTokenizerGuide(SyncedGuide):
    """A GuideStream for a guide with its own tokenizer (contract:
    blendin_ext.guides.stream). `guide_to_base` defaults to the map built from
    both tokenizers' token strings (cached on disk); `base_vocab` is the base
    model's logit width where it exceeds its tokenizer; `guide_sync`: "tokens"
    (feed twins) or "text" (re-tokenise the whole text), module docstring."""

    def __init__(
        self,
        model,
        guide_tokenizer,
        base_tokenizer,
        *,
        guide_to_base=None,
        base_vocab: Optional[int] = None,
        system_prompt: Optional[str] = None,
        chat: bool = True,
        device: Optional[torch.device] = None,
        guide_sync: str = TOKENS,
    ):
        super().__init__(
            model, guide_tokenizer, system_prompt=system_prompt, chat=chat, device=device
        )
        self.base_tokenizer = base_tokenizer
        self.map_report = None
        if guide_to_base is None:
            config = getattr(model, "config", None)
            guide_to_base, self.map_report = vocab_map(
                guide_tokenizer,
                base_tokenizer,
                base_vocab=base_vocab,
                guide_vocab=getattr(config, "vocab_size", None),
            )
            if self.map_report.mapped <= len(self.map_report.specials_mapped):
                raise ValueError(
                    "guide_tokenizer and the base tokenizer share no token text, so no guide "
                    "token can be mapped; pass guide_to_base, a (guide_vocab,) tensor of base "
                    "ids (-1 where none), or use a guide with a related tokenizer"
                )
        elif not isinstance(guide_to_base, GuideMap):
            guide_to_base = guide_map(guide_to_base, max(base_vocab or 0, len(base_tokenizer)))
        self.guide_to_base = guide_to_base
        self._mapped = mapped_mask(guide_to_base)
        self._twins = TwinSync(
            guide_to_base.base_to_guide.tolist(),
            TokenBytes(base_tokenizer),
            TokenBytes(guide_tokenizer),
            self._tokenise,
            guide_sync,
        )

    @property
    def guide_sync(self) -> str:
        """ "tokens" or "text" (module docstring); set it before `start`."""
        return self._twins.mode

    @guide_sync.setter
    def guide_sync(self, value: str) -> None:
        # A copy, not the object a per-call copy of this guide shares with
        # the generator's (GuideStream.for_call).
        self._twins = copy.copy(self._twins)
        self._twins.mode = check_guide_sync(value)
        if self._row_state:  # rows derived the other way start over
            self._row_state = [RowSync() for _ in self._row_state]

    def stop_token_ids(self) -> Set[int]:
        """The guide's stop tokens (EOS, end of turn) that have a base twin."""
        table = self.guide_to_base.guide_to_base
        own = stop_token_ids(self.tokenizer, self.model, chat=self.chat)
        return {int(table[t]) for t in own if 0 <= t < table.numel() and table[t] >= 0}

    # ------------------------------------------------------------- internals
    def _tokenise(self, text: str) -> List[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _new_row_state(self) -> RowSync:
        return RowSync()

    def _wanted_ids(self, row: int) -> List[int]:
        """Prompt + the guide's ids for the row's base tokens so far (twins
        and re-tokenised stretches, `TwinSync`; cached until the row grows)."""
        return self._prompt_ids[row] + self._twins.update(self._row_state[row], self._base_ids[row])

    def _settled_ids(self, row: int) -> List[int]:
        """Prompt + the row's final guide ids: its open stretch may still be
        re-tokenised, so it is not fed ahead of need."""
        wanted = self._wanted_ids(row)
        return wanted[: len(wanted) - len(self._row_state[row].tail)]

    def _fit_map(self, width: int) -> None:
        """Pads the map with -1 when the guide's logits are wider than its
        tokenizer (padded embedding matrix)."""
        table = self.guide_to_base.guide_to_base
        if table.numel() < width:
            table = torch.cat([table, table.new_full((width - table.numel(),), -1)])
            self.guide_to_base = guide_map(table, self.guide_to_base.base_to_guide.numel())
            self._mapped = mapped_mask(table)

    def _record_run(self, logits: torch.Tensor) -> None:
        """The share of the guide's probability on mapped tokens, per live row."""
        self._fit_map(logits.shape[-1])
        self._coverage.record(mapped_mass(logits, self._mapped), self._live)

    # ------------------------------------------------------------ reporting
    def twin_share_by_row(self, rows: Optional[Sequence[int]] = None) -> List[Optional[float]]:
        """Share of each row's guide ids (after its prompt) fed as base
        tokens' twins, over the base tokens pushed so far (None: no ids yet).
        rows: only these rows, in this order (default: all)."""
        rows = range(self.rows) if rows is None else rows
        for row in rows:
            self._wanted_ids(row)
        return [self._row_state[row].twin_share for row in rows]
