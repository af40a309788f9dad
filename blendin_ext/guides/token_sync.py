"""Which guide ids stand for a row's base tokens (a cross-tokenizer guide).

Two ways to sync, the ``guide_sync`` option:

- ``"tokens"`` (default): a base token with a guide twin (the map's inverse,
  ``GuideMap.base_to_guide``; twins spell the same bytes) is fed as that
  twin, so a guide whose own choices were taken sees exactly the tokens it
  produced (re-tokenising "\\n" "\\n" would hand it "\\n\\n" instead). Only a
  *stretch* of base tokens without twins goes through text: its bytes are
  decoded and re-tokenised by the guide's tokenizer. A stretch runs from a
  token without twin to the next token with one; it also takes in twins
  while its bytes end inside a UTF-8 character. While a stretch is the
  row's tail it stays open (re-tokenised as it grows: the cache rolls back
  where the new tokenisation differs); once a twin follows, it is final.
  Where a stretch's ids would not spell its bytes again (a guide tokenizer
  that adds a leading space, bytes that are no text on their own), the row
  falls back to the text path from its first generated token up to there.
  Work per step is O(new tokens), not O(length).
- ``"text"``: the whole generated text is re-tokenised at every guide run
  (one open stretch from the first token), as earlier versions did.

`RowSync.twin_share` is the share of a row's guide ids fed as twins.
"""

from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

from blendin_ext.ops.validate import GUIDE_SYNC_MODES, check_guide_sync

TOKENS, TEXT = GUIDE_SYNC_MODES


def decodable(data: bytes) -> Tuple[str, bool]:
    """(text, complete): the text of `data`, less an unfinished UTF-8
    character at its end (complete is False when one was left out).
    Invalid bytes elsewhere become U+FFFD, as a tokenizer's decode does."""
    try:
        return data.decode("utf-8"), True
    except UnicodeDecodeError as err:
        if err.reason == "unexpected end of data" and err.end == len(data):
            return data[: err.start].decode("utf-8", errors="replace"), False
        return data.decode("utf-8", errors="replace"), True


class RowSync:
    """One row's guide view of its base tokens: final guide ids for base
    tokens [0, done), and the open stretch after them."""

    __slots__ = ("done", "ids", "twins", "seen", "tail")

    def __init__(self):
        self.done = 0  # base tokens whose guide ids are final
        self.ids: List[int] = []  # their guide ids
        self.twins = 0  # how many of `ids` are twins
        self.seen = -1  # base tokens the cached view covers
        self.tail: List[int] = []  # guide ids of the open stretch

    @property
    def twin_share(self):
        """Share of the row's guide ids fed as twins (None before any)."""
        total = len(self.ids) + len(self.tail)
        return self.twins / total if total else None


class TwinSync:
    """Turns base ids into guide ids by twins and text stretches (module
    docstring). base_to_guide: list, guide id per base id (-1: none);
    base_bytes / guide_bytes: TokenBytes of both tokenizers; tokenise: text
    -> guide ids."""

    def __init__(
        self,
        base_to_guide: Sequence[int],
        base_bytes,
        guide_bytes,
        tokenise: Callable[[str], List[int]],
        mode: str = TOKENS,
    ):
        self.base_to_guide = base_to_guide
        self.base_bytes, self.guide_bytes = base_bytes, guide_bytes
        self.tokenise = tokenise
        self.mode = check_guide_sync(mode)

    def twin(self, base_id: int) -> int:
        return self.base_to_guide[base_id] if 0 <= base_id < len(self.base_to_guide) else -1

    def update(self, row: RowSync, base_ids: Sequence[int]) -> List[int]:
        """The guide ids for `base_ids` (which only ever grow), advancing `row`."""
        n = len(base_ids)
        if row.seen == n:
            return row.ids + row.tail
        i = row.done if self.mode == TOKENS else 0
        while i < n:
            twin = self.twin(base_ids[i])
            if self.mode == TOKENS and twin >= 0:
                row.ids.append(twin)
                row.twins += 1
                i += 1
                continue
            end = self._stretch_end(base_ids, i)
            data = self.base_bytes.join(base_ids[i:end])
            text, _ = decodable(data)
            ids = self.tokenise(text) if text else []
            if end == n or self.mode == TEXT:
                row.done, row.tail = i, ids  # open: redone as the row grows
                break
            if self.guide_bytes.join(ids) != data:
                # Would not round-trip on its own: the text path from the start.
                text, _ = decodable(self.base_bytes.join(base_ids[:end]))
                row.ids, row.twins = self.tokenise(text) if text else [], 0
            else:
                row.ids.extend(ids)
            i = end
        else:
            row.done, row.tail = n, []
        row.seen = n
        return row.ids + row.tail

    def _stretch_end(self, base_ids: Sequence[int], start: int) -> int:
        """End of the stretch starting at `start` (a token without twin):
        before the next twin that begins at a character boundary."""
        if self.mode == TEXT:
            return len(base_ids)
        data = bytearray(self.base_bytes(base_ids[start]))
        end = start + 1
        while end < len(base_ids):
            if self.twin(base_ids[end]) >= 0 and decodable(bytes(data))[1]:
                break
            data += self.base_bytes(base_ids[end])
            end += 1
        return end
