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
time the guide runs (``coverage``): where it is low, the guide's advice is
mostly lost in translation.

Rows of one forward feed different numbers of tokens. The block is
right-aligned (holes first, mask 0), so every row that feeds anything has a
real token in the last column, whose logits are the ones returned; rows that
feed nothing keep the logits of their previous forward, which still describe
their unchanged text.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Set

import torch

from blendin_ext.guides.stream import SameTokenizerGuide
from blendin_ext.guides.vocab_map import mapped_mass, vocab_map
from blendin_ext.models.prompts import stop_token_ids
from blendin_ext.ops.maps import GuideMap, guide_map


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def plan_sync(held: List[List[int]], columns: List[List[int]], wanted: List[List[int]],
              length: int) -> tuple:
    """Where to cut the guide's cache and what each row must feed.

    held[r] / columns[r]: the guide ids row r's cache holds and their
    columns; wanted[r]: the ids it should hold (prompt + re-tokenised text);
    length: columns in the cache.
    Returns (cut, feeds): keep columns [0, cut), then row r feeds feeds[r].
    A row whose cache is cut feeds at least one token, so that its logits
    come back (its stored ones no longer describe what the cache holds).
    """
    cut = length
    for r, (have, want) in enumerate(zip(held, wanted)):
        keep = common_prefix(have, want)
        if keep < len(have):
            cut = min(cut, columns[r][keep])
    while True:
        feeds, lowered = [], False
        for r, want in enumerate(wanted):
            kept = sum(1 for c in columns[r] if c < cut)
            feed = want[kept:]
            if not feed and kept < len(held[r]):
                # Re-feed the row's last kept token so its logits come back.
                cut, lowered = columns[r][kept - 1], True
                break
            feeds.append(feed)
        if not lowered:
            return cut, feeds


class CrossTokenizerGuide(SameTokenizerGuide):
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
        self.coverage: List[torch.Tensor] = []   # (B,) mapped guide mass per guide forward
        self.coverage_live: List[List[bool]] = []

    # ------------------------------------------------------------ the stream
    def start(self, prompts, capacity):
        self._prompt_ids = self.prompt_ids(prompts)
        if any(len(ids) == 0 for ids in self._prompt_ids):
            raise ValueError("every guide prompt needs at least one token")
        self._capacity = capacity
        rows = len(self._prompt_ids)
        self._base_ids: List[List[int]] = [[] for _ in range(rows)]
        self._live = [True] * rows
        self._held: List[List[int]] = [[] for _ in range(rows)]
        self._columns: List[List[int]] = [[] for _ in range(rows)]
        self._row_logits: Optional[torch.Tensor] = None
        self._tokenised = [(-1, None)] * rows    # (base ids seen, guide ids) per row
        self.coverage, self.coverage_live = [], []
        self.rollbacks = 0      # times the cache was cut back to a common prefix
        self.refed_tokens = 0   # guide tokens dropped by those cuts (fed again)

    def push(self, tokens, host_tokens, live):
        for row, alive in enumerate(live):
            if alive:
                self._base_ids[row].append(int(host_tokens[row]))
        self._live = list(live)

    def logits(self):
        wanted = [self._wanted_ids(r) for r in range(len(self._base_ids))]
        ran = self._first_forward(wanted) if self._row_logits is None else self._sync(wanted)
        if ran:
            self._fit_map(self._row_logits.shape[-1])
            self.coverage.append(mapped_mass(self._row_logits, self._mapped))
            self.coverage_live.append(list(self._live))
        return self._row_logits

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

    def _first_forward(self, wanted: List[List[int]]) -> bool:
        """The prompt and whatever text came before the guide's first run,
        left-padded like any prompt, in one forward."""
        self.stream.start(wanted, self._capacity)
        width = max(len(w) for w in wanted)
        self._held = [list(w) for w in wanted]
        self._columns = [list(range(width - len(w), width)) for w in wanted]
        self._row_logits = self.stream.logits().clone()
        return True

    def _sync(self, wanted: List[List[int]]) -> bool:
        """Roll back to the common prefix, feed the rest right-aligned;
        whether the guide ran."""
        length = self.stream.length
        cut, feeds = plan_sync(self._held, self._columns, wanted, length)
        if cut < length:
            self.stream.truncate(cut)
            self.rollbacks += 1
            for r in range(len(wanted)):
                kept = sum(1 for c in self._columns[r] if c < cut)
                self.refed_tokens += len(self._held[r]) - kept
                del self._held[r][kept:], self._columns[r][kept:]
        width = max(len(f) for f in feeds)
        if width == 0:
            return False
        start = self.stream.length
        device = self.stream.device
        block = torch.full((len(feeds), width), self.stream.pad_id, dtype=torch.long)
        mask = torch.zeros((len(feeds), width), dtype=torch.long)
        for r, feed in enumerate(feeds):
            if feed:
                block[r, width - len(feed):] = torch.tensor(feed, dtype=torch.long)
                mask[r, width - len(feed):] = 1
                self._held[r].extend(feed)
                self._columns[r].extend(range(start + width - len(feed), start + width))
        self.stream.push(block.to(device), mask.to(device))
        fresh = self.stream.logits()
        fed = torch.tensor([bool(f) for f in feeds], device=fresh.device)
        self._row_logits = torch.where(fed[:, None], fresh, self._row_logits)
        return True

    def _fit_map(self, width: int) -> None:
        """Pads the map with -1 when the guide's logits are wider than its
        tokenizer (padded embedding matrix)."""
        table = self.guide_to_base.guide_to_base
        if table.numel() < width:
            table = torch.cat([table, table.new_full((width - table.numel(),), -1)])
            self.guide_to_base = guide_map(table, self.guide_to_base.base_to_guide.numel())
            self._mapped = table >= 0

    # ------------------------------------------------------------ reporting
    def coverage_by_row(self) -> List[Optional[float]]:
        """Mean mapped guide mass per row over the guide runs while the row
        was live (None for a row the guide never ran for)."""
        if not self.coverage:
            return [None] * len(self._live)
        mass = torch.stack(self.coverage).float().cpu()
        live = torch.tensor(self.coverage_live, dtype=torch.bool)
        counts = live.sum(0)
        sums = (mass * live).sum(0)
        return [float(s / c) if c else None for s, c in zip(sums, counts)]
