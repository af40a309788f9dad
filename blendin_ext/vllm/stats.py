"""The plug-in's counters, per engine rank: how often the guide ran, for
how long, and what it holds in memory.

Declared channel: ``additional_config.blendin.stats = PATH`` appends a JSON
line of `EngineStats` each time the rank's batch of blended requests
empties (every ``LLM.generate`` call that finishes its requests, or a
server going idle); `read_stats(PATH)` returns the last line per rank.
Benchmarks and the tensor-parallel test read it; it works whichever
process the engine's workers run in.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional

from blendin_ext.vllm.diagnostics import last_line_by


@dataclass(frozen=True)
class EngineStats:
    """Counters since the engine started, for one rank."""

    rank: int  # the worker's rank (tensor parallel: each runs its guide)
    steps: int  # apply calls with blended rows
    blended_rows: int  # rows over those steps
    guide_runs: int  # (step, agree-bonus group) pairs with a guide forward
    guide_rows_fed: int  # rows that needed the guide, over all steps
    guide_forwards: int  # the guide model's forward calls
    guide_tokens: int  # tokens fed to the guide
    guide_seconds: float  # time in the guide's forwards
    apply_seconds: float  # time in the plug-in's apply, guide included
    rebuilds: int  # times the guide's cache was rebuilt from its rows' ids
    guide_param_bytes: int  # the guide's weights on this rank
    guide_cache_bytes: int  # the guide's KV cache at its largest so far (rows x length)


class StatsLog:
    """Appends `EngineStats` lines to a file (None: keeps nothing)."""

    def __init__(self, path: Optional[str]):
        self.path = Path(path) if path else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, stats: EngineStats) -> None:
        if self.path is not None:
            with open(self.path, "a") as out:  # one short line: ranks may share the file
                out.write(json.dumps(asdict(stats)) + "\n")


def read_stats(path) -> Dict[int, dict]:
    """The stats file as {rank: the rank's last line}."""
    return last_line_by(path, "rank")
