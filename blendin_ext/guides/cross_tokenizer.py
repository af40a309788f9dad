"""A guide whose tokenizer differs from the base's, kept in sync at the text level.

The loop chooses base-vocabulary tokens. The guide cannot be fed those ids,
so it is fed *text*: whenever its logits are needed, each row's generated
base tokens are decoded, the text is re-tokenised with the guide's tokenizer,
the guide's KV cache is rolled back to the longest common token prefix with
what it already holds, and only the rest is fed (one forward for the batch).
A re-tokenisation may change the last few guide tokens (" Par" + "is" ->
" Paris"), which is why the rollback exists; usually it keeps everything.

The guide's logits come back in its own vocabulary; the op receives the
guide->base map (`blendin_ext.guides.vocab_map`) and mixes only tokens that have a
twin. The share of the guide's probability on such tokens is recorded every
time the guide runs (``coverage_by_row``): where it is low, the guide's
advice is mostly lost in translation.

The roll-back-and-feed machinery (right-aligned blocks with holes, rows
joining and leaving) is `blendin_ext.guides.synced.SyncedGuide`'s; this
class supplies the ids each row should hold and the map.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Set

import torch

from blendin_ext.guides.synced import SyncedGuide, common_prefix, plan_sync  # noqa: F401
from blendin_ext.guides.vocab_map import mapped_mass, vocab_map
from blendin_ext.models.prompts import stop_token_ids
from blendin_ext.ops.maps import GuideMap, guide_map


class CrossTokenizerGuide(SyncedGuide):
    """A GuideStream for a guide with its own tokenizer (contract:
    blendin_ext.guides.stream). `guide_to_base` defaults to the map built from
    both tokenizers' token strings (cached on disk); `base_vocab` is the base
    model's logit width where it exceeds its tokenizer."""

    def __init__(self, model, guide_tokenizer, base_tokenizer, *, guide_to_base=None,
                 base_vocab: Optional[int] = None, system_prompt: Optional[str] = None,
                 chat: bool = True, device: Optional[torch.device] = None):
        super().__init__(model, guide_tokenizer, system_prompt=system_prompt, chat=chat,
                         device=device)
        self.base_tokenizer = base_tokenizer
        self.map_report = None
        if guide_to_base is None:
            config = getattr(model, "config", None)
            guide_to_base, self.map_report = vocab_map(
                guide_tokenizer, base_tokenizer, base_vocab=base_vocab,
                guide_vocab=getattr(config, "vocab_size", None))
            if self.map_report.mapped <= len(self.map_report.specials_mapped):
                raise ValueError(
                    "guide_tokenizer and the base tokenizer share no token text, so no guide "
                    "token can be mapped; pass guide_to_base, a (guide_vocab,) tensor of base "
                    "ids (-1 where none), or use a guide with a related tokenizer")
        elif not isinstance(guide_to_base, GuideMap):
            guide_to_base = guide_map(guide_to_base, max(base_vocab or 0, len(base_tokenizer)))
        self.guide_to_base = guide_to_base
        self._mapped = guide_to_base.guide_to_base >= 0
        # Decoding a row after this anchor keeps the space a SentencePiece
        # decoder would strip from the first token (" Paris", not "Paris").
        self._anchor = list(base_tokenizer("a", add_special_tokens=False)["input_ids"])[-1:]
        self._anchor_text = self._decode_base(self._anchor)

    def stop_token_ids(self) -> Set[int]:
        """The guide's stop tokens (EOS, end of turn) that have a base twin."""
        table = self.guide_to_base.guide_to_base
        own = stop_token_ids(self.tokenizer, self.model, chat=self.chat)
        return {int(table[t]) for t in own if 0 <= t < table.numel() and table[t] >= 0}

    # ------------------------------------------------------------- internals
    def _decode_base(self, ids) -> str:
        return self.base_tokenizer.decode(ids, skip_special_tokens=True,
                                          clean_up_tokenization_spaces=False)

    def _wanted_ids(self, row: int) -> List[int]:
        """Prompt + the guide's tokenisation of the row's text so far (cached
        until the row grows). An unfinished UTF-8 character at the end is left
        out until its last byte arrives."""
        ids = self._base_ids[row]
        seen, cached = self._tokenised[row]
        if seen == len(ids):
            return cached
        text = self._decode_base(self._anchor + ids) if ids else self._anchor_text
        text = text[len(self._anchor_text):] if text.startswith(self._anchor_text) else text
        text = text.rstrip("\ufffd")
        new = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
        wanted = self._prompt_ids[row] + new
        self._tokenised[row] = (len(ids), wanted)
        return wanted

    def _fit_map(self, width: int) -> None:
        """Pads the map with -1 when the guide's logits are wider than its
        tokenizer (padded embedding matrix)."""
        table = self.guide_to_base.guide_to_base
        if table.numel() < width:
            table = torch.cat([table, table.new_full((width - table.numel(),), -1)])
            self.guide_to_base = guide_map(table, self.guide_to_base.base_to_guide.numel())
            self._mapped = table >= 0

    def _record_run(self, logits: torch.Tensor) -> None:
        """The share of the guide's probability on mapped tokens, per live row."""
        self._fit_map(logits.shape[-1])
        live = torch.tensor(self._live, dtype=torch.float32, device=self._coverage_sum.device)
        self._coverage_sum += mapped_mass(logits, self._mapped).float().to(live.device) * live
        self._coverage_runs += live

    # ------------------------------------------------------------ reporting
    def coverage_by_row(self) -> List[Optional[float]]:
        """Mean mapped guide mass per row over the guide runs while the row
        was live (None for a row the guide never ran for)."""
        if self._coverage_sum is None:
            return [None] * self.rows
        sums, runs = self._coverage_sum.cpu().tolist(), self._coverage_runs.cpu().tolist()
        return [s / n if n else None for s, n in zip(sums, runs)]
