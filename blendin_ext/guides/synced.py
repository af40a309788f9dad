"""A guide kept in sync with each row by the ids it should hold.

For every row the guide derives the ids its cache should hold, *wanted* =
its own prompt + its view of the base tokens chosen so far (`_wanted_ids`:
the base ids themselves for a shared vocabulary; the cross-tokenizer guide
feeds their guide twins and re-tokenises only stretches without twins).
When logits are asked for, the cache is rolled back to the longest common
prefix with what it holds (one cut for the batch) and each row feeds the
rest, right-aligned in one forward (holes first, mask 0), so every row
that feeds has a real token in the last column; rows that feed nothing
keep their previous logits.

Because a row is described only by its prompt and its base ids, rows can
join and leave between steps (`add_rows`, `keep_rows`): the continuous batch
of a serving engine (blendin_ext.vllm). The cache is edited in place where
the model allows it (blendin_ext.models.kv_rows), else rebuilt from the ids
at the next forward; it is also rebuilt once holes make it much longer than
its longest row.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from blendin_ext.guides.coverage import RowCoverage
from blendin_ext.guides.stream import SameTokenizerGuide

# Rebuild the cache when its length exceeds this factor times the longest
# row plus a little slack: holes left by joining rows cost attention time.
REBUILD_FACTOR = 2
REBUILD_SLACK = 64


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the usual case (rows only grow), compared in C
        return n
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def plan_sync(
    held: List[List[int]], columns: List[List[int]], wanted: List[List[int]], length: int
) -> tuple:
    """Where to cut the guide's cache and what each row must feed.

    held[r] / columns[r]: the guide ids row r's cache holds and their
    columns; wanted[r]: the ids it should hold (prompt + its guide ids);
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


class SyncedGuide(SameTokenizerGuide):
    """A GuideStream whose rows are synced by their wanted ids (module
    docstring); for a shared vocabulary the base ids are fed as they are."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._row_state: list = []  # per row, see `_new_row_state`; `start` sets the rest

    # ------------------------------------------------------------ the stream
    def start(self, prompts, capacity):
        self._capacity = capacity
        self._prompt_ids: List[List[int]] = []
        self._base_ids: List[List[int]] = []
        self._live: List[bool] = []
        self._held: List[List[int]] = []
        self._columns: List[List[int]] = []
        self._row_state: list = []  # per row, see `_new_row_state`
        self._row_logits: Optional[torch.Tensor] = None
        # Per-row statistics (`_record_run`); None until the first forward.
        self._coverage: Optional[RowCoverage] = None
        self.rollbacks = 0  # times the cache was cut back to a common prefix
        self.refed_tokens = 0  # guide tokens dropped by those cuts (fed again)
        self.rebuilds = 0  # times the cache was rebuilt from the rows' ids
        self.add_rows(prompts)

    def push(self, tokens, host_tokens, live):
        for row, alive in enumerate(live):
            if alive:
                self._base_ids[row].append(int(host_tokens[row]))
        self._live = list(live)

    def logits(self, rows: Optional[Sequence[int]] = None):
        """(B, Vg) logits after every row's base ids; with `rows`, only those
        rows are brought up to date (the others' rows are stale, or zeros
        for a row the guide never ran for)."""
        if not self._prompt_ids:
            raise ValueError("the guide has no rows")
        chosen = set(range(self.rows)) if rows is None or self._row_logits is None else set(rows)
        # Rows not asked for keep what they hold, plus whatever rides along in
        # the forward's padding (`_fill_padding`).
        wanted = [self._wanted_ids(r) if r in chosen else self._held[r] for r in range(self.rows)]
        if self._row_logits is not None and self._too_long(wanted):
            self._row_logits = None
            wanted = [self._wanted_ids(r) for r in range(self.rows)]
        if self._row_logits is None:
            ran = self._first_forward(wanted)
        else:
            if len(chosen) < self.rows:  # some rows were not asked for
                wanted = self._fill_padding(wanted, chosen)
            ran = self._sync(wanted)
        if ran:
            self._record_run(self._row_logits)
        return self._row_logits

    # ------------------------------------------------- rows joining, leaving
    def add_rows(
        self,
        prompts: Sequence[str],
        base_ids: Optional[Sequence[List[int]]] = None,
        prompt_ids: Optional[Sequence[List[int]]] = None,
    ) -> None:
        """Appends rows for `prompts` (or ready guide `prompt_ids`).
        base_ids: each row's base tokens so far; the list is kept by
        reference, so a caller that appends to it needs no `push`."""
        ids = self.prompt_ids(prompts) if prompt_ids is None else [list(p) for p in prompt_ids]
        if any(len(p) == 0 for p in ids):
            raise ValueError("every guide prompt needs at least one token")
        base_ids = [[] for _ in ids] if base_ids is None else list(base_ids)
        for prompt, base in zip(ids, base_ids):
            self._prompt_ids.append(prompt)
            self._base_ids.append(base)
            self._live.append(True)
            self._held.append([])
            self._columns.append([])
            self._row_state.append(self._new_row_state())
        count = len(ids)
        if self._coverage is not None:
            self._coverage.add_rows(count)
        if self._row_logits is None:
            return
        if not self.stream.can_edit_rows():
            self._row_logits = None  # rebuilt with every row at the next forward
            return
        self.stream.add_rows(count)
        empty = self._row_logits.new_zeros((count, self._row_logits.shape[1]))
        self._row_logits = torch.cat([self._row_logits, empty])

    def keep_rows(self, index: Sequence[int]) -> None:
        """Keeps rows `index`, in that order (rows that left are dropped,
        moved rows take their new places)."""
        index = list(index)
        for name in ("_prompt_ids", "_base_ids", "_live", "_held", "_columns", "_row_state"):
            old = getattr(self, name)
            setattr(self, name, [old[i] for i in index])
        if self._coverage is not None:
            self._coverage.keep(index)
        if self._row_logits is None:
            return
        if not index or not self.stream.can_edit_rows():
            self._row_logits = None  # rebuilt from the rows' ids at the next forward
            return
        self.stream.keep_rows(index)
        rows = torch.tensor(index, dtype=torch.long, device=self._row_logits.device)
        self._row_logits = self._row_logits.index_select(0, rows)
        self._drop_leading_holes()

    def can_keep_rows(self) -> bool:
        return True  # the cache is edited, or else rebuilt from the rows' ids

    @property
    def rows(self) -> int:
        return len(self._prompt_ids)

    def coverage_by_row(self) -> List[Optional[float]]:
        """Per row, the mean mapped guide mass over the guide runs while the
        row was live (None for a row never recorded: every row of a guide
        whose ids are base ids, whose `_record_run` records nothing)."""
        if self._coverage is None:
            return [None] * self.rows
        return self._coverage.by_row()

    # ------------------------------------------------------------- internals
    def _new_row_state(self):
        """What a subclass keeps per row to derive its wanted ids (moves with
        the row when rows join and leave)."""
        return None

    def _wanted_ids(self, row: int) -> List[int]:
        """Prompt + the row's base ids (a shared vocabulary)."""
        return self._prompt_ids[row] + self._base_ids[row]

    def _settled_ids(self, row: int) -> List[int]:
        """The part of `_wanted_ids(row)` that later base tokens cannot
        change (all of it for a shared vocabulary)."""
        return self._wanted_ids(row)

    def _fill_padding(self, wanted: List[List[int]], chosen: set) -> List[List[int]]:
        """Rows not asked for also take their next settled ids, up to the
        widest feed of the rows asked for. The forward pads every row to
        that width anyway, so they ride along at no cost, and later
        catch-ups stay narrow: a lazy guide at a large batch otherwise pads
        every forward to the longest backlog of the rows it runs for."""
        width = 0
        for r in chosen:
            held, want = self._held[r], wanted[r]
            if want[: len(held)] != held:
                return wanted  # a rollback: plan_sync plans it as asked
            width = max(width, len(want) - len(held))
        if width == 0:
            return wanted
        filled = list(wanted)
        for r in range(self.rows):
            if r in chosen:
                continue
            held = self._held[r]
            settled = self._settled_ids(r)
            if len(settled) > len(held) and settled[: len(held)] == held:
                filled[r] = settled[: len(held) + width]
        return filled

    def _too_long(self, wanted: List[List[int]]) -> bool:
        longest = max(len(w) for w in wanted)
        return self.stream.length > REBUILD_FACTOR * longest + REBUILD_SLACK

    def _first_forward(self, wanted: List[List[int]]) -> bool:
        """Every row from scratch, left-padded like any prompt, in one forward."""
        if self._coverage is not None:  # not the first forward
            self.rebuilds += 1
        self.stream.start(wanted, self._capacity)
        width = max(len(w) for w in wanted)
        self._held = [list(w) for w in wanted]
        self._columns = [list(range(width - len(w), width)) for w in wanted]
        self._row_logits = self.stream.logits().clone()
        if self._coverage is None:
            self._coverage = RowCoverage(len(wanted), self._row_logits.device)
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
                block[r, width - len(feed) :] = torch.tensor(feed, dtype=torch.long)
                mask[r, width - len(feed) :] = 1
                self._held[r].extend(feed)
                self._columns[r].extend(range(start + width - len(feed), start + width))
        self.stream.push(block.to(device), mask.to(device))
        fresh = self.stream.logits()
        fed = torch.tensor([bool(f) for f in feeds], device=fresh.device)
        self._row_logits = torch.where(fed[:, None], fresh, self._row_logits)
        return True

    def _drop_leading_holes(self) -> None:
        """Frees the columns that only rows which left were using."""
        count = self.stream.leading_holes()
        if count > 0:
            self.stream.drop_leading_columns(count)
            self._columns = [[c - count for c in cols] for cols in self._columns]

    def _record_run(self, logits: torch.Tensor) -> None:
        """Hook after each guide forward (the cross-tokenizer guide records
        the share of its probability on mapped tokens in `_coverage`)."""
