"""Per-row map coverage of a guide with another tokenizer.

The share of the guide's probability on tokens that have a base twin
(`blendin_ext.guides.vocab_map.mapped_mass`) is recorded for every live row
each time the guide runs; a row's coverage is its mean over those runs.
Where it is low, the guide's advice is mostly lost in translation. Rows
join and leave with the guide's (`add_rows`, `keep`), so the sums stay on
the device and are read only when asked for.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch


class RowCoverage:
    """Summed mapped mass and guide runs per row, on `device`."""

    def __init__(self, rows: int, device: torch.device):
        self.sums = torch.zeros(rows, device=device)
        self.runs = torch.zeros(rows, device=device)

    def add_rows(self, count: int) -> None:
        """Rows that joined, with nothing recorded yet."""
        zeros = self.sums.new_zeros(count)
        self.sums = torch.cat([self.sums, zeros])
        self.runs = torch.cat([self.runs, zeros])

    def keep(self, index: Sequence[int]) -> None:
        """Keeps rows `index`, in that order."""
        rows = torch.tensor(list(index), dtype=torch.long, device=self.sums.device)
        self.sums = self.sums.index_select(0, rows)
        self.runs = self.runs.index_select(0, rows)

    def record(self, mass: torch.Tensor, live: Sequence[bool]) -> None:
        """One guide run: (B,) mapped mass per row, counted for live rows."""
        alive = torch.tensor(list(live), dtype=torch.float32, device=self.sums.device)
        self.sums += mass.float().to(alive.device) * alive
        self.runs += alive

    def by_row(self) -> List[Optional[float]]:
        """Mean mapped mass per row (None for a row never recorded)."""
        sums, runs = self.sums.cpu().tolist(), self.runs.cpu().tolist()
        return [s / n if n else None for s, n in zip(sums, runs)]
