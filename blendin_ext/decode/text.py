"""Incremental detokenisation of a generated row: streaming text deltas
that never end inside a multi-byte character or a possible stop string,
and where the first stop string begins."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple


def _held_back(text: str, stop_strings: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that could still grow into a
    stop string; streaming holds it back until that is decided."""
    longest = 0
    for stop in stop_strings:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class RowText:
    """Incremental text of one generated row: streaming deltas that never end
    inside a multi-byte character or a possible stop string, and the
    position of the first stop string."""

    def __init__(self, tokenizer, stop_strings: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop_strings = tuple(stop_strings)
        self.ids: List[int] = []
        self.text = ""  # decoded so far (may end with a held-back tail)
        self.emitted = 0  # characters of `text` already handed out
        self.stop_at: Optional[int] = None  # index in `text` of the first stop string
        self._prefix = 0  # ids[_prefix:_read] decode to the context of the next delta
        self._read = 0

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token: int) -> Tuple[str, bool]:
        """Appends a token; returns (new visible text, whether a stop string
        has now appeared)."""
        self.ids.append(token)
        context = self._decode(self.ids[self._prefix : self._read])
        full = self._decode(self.ids[self._prefix :])
        if len(full) > len(context) and not full.endswith("\ufffd"):
            self.text += full[len(context) :]
            self._prefix, self._read = self._read, len(self.ids)
        if self.stop_strings and self.stop_at is None:
            self._find_stop()
        end = len(self.text) if self.stop_at is None else self.stop_at
        if self.stop_at is None and self.stop_strings:
            end -= _held_back(self.text, self.stop_strings)
        delta = self.text[self.emitted : end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return delta, self.stop_at is not None

    def _find_stop(self) -> None:
        longest = max(len(s) for s in self.stop_strings)
        # Only the tail can hold a new match: earlier text was searched before.
        start = max(0, self.emitted - longest)
        hits = [i for i in (self.text.find(s, start) for s in self.stop_strings) if i >= 0]
        if hits:
            self.stop_at = min(hits)

    def flush(self) -> str:
        """Whatever is still held back once the row has finished."""
        end = len(self.text) if self.stop_at is None else self.stop_at
        delta = self.text[self.emitted : end]
        self.emitted = max(self.emitted, end)
        return delta
