"""Per-request BlendIn diagnostics inside vLLM, keyed by request id.

The processor records every step of a blended request by its position in
the output (a step whose token vLLM discards, a chunked prefill's, or one
recomputed after preemption, is overwritten by the one that counts), and
summarises it with the decode loop's `SequenceDiagnostics` (interventions,
rate, mean alpha, agreement, who won).

Where to read them:
- a JSON-lines file, ``additional_config.blendin.diagnostics``: a line per
  request each time it leaves the batch (finished, or preempted: the last
  line of a request id wins); `read_diagnostics(path)` returns the dict.
  This works for ``LLM`` and ``vllm serve`` alike, whichever process the
  engine runs in;
- `current()` in the engine's own process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
  or from a function run with ``llm.collective_rpc``).
"""
from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from blendin_ext.decode.diagnostics import SequenceDiagnostics

# (token, base_confidence, intervened, alpha, agree, base_top, guide_top),
# the arguments of SequenceDiagnostics.record.
Step = Tuple[int, float, bool, float, float, int, int]
KEEP_FINISHED = 10_000   # summaries kept in memory per engine


def external_id(engine_id: str) -> str:
    """The id the user sees (RequestOutput.request_id, the API's "id") for
    an engine's internal request id: vLLM appends "-" and 8 characters."""
    head, sep, tail = engine_id.rpartition("-")
    return head if sep and len(tail) == 8 and head else engine_id


@dataclass
class RequestDiagnostics:
    """What one request's steps said, by output position."""

    request_id: str          # as the user sees it
    strategy: str
    steps: Dict[int, Step] = field(default_factory=dict)
    bad_steps: int = 0       # steps whose logits held NaN/+inf: left to vLLM
    resumed: int = 0         # times it came back after preemption
    # A cross-tokenizer guide's view of the row, read when it leaves the
    # batch (None before, or with a guide of the base's vocabulary): the
    # share of its guide ids fed as the chosen tokens' twins, and the guide's
    # mean probability mass on mapped tokens since the request last joined.
    guide_twin_share: Optional[float] = None
    map_coverage: Optional[float] = None

    def record(self, position: int, step: Step) -> None:
        self.steps[position] = step

    def sequence(self) -> SequenceDiagnostics:
        diag = SequenceDiagnostics()
        for position in sorted(self.steps):
            diag.record(*self.steps[position])
        diag.guide_twin_share = self.guide_twin_share
        return diag

    def summary(self) -> dict:
        return {"request_id": self.request_id, "strategy": self.strategy,
                "bad_steps": self.bad_steps, "resumed": self.resumed,
                "map_coverage": self.map_coverage, **self.sequence().summary()}


class DiagnosticsLog:
    """Summaries of requests that left the batch: in memory (bounded) and,
    when configured, appended to a JSON-lines file."""

    def __init__(self, path: Optional[str] = None):
        self.path = Path(path) if path else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.finished: "OrderedDict[str, dict]" = OrderedDict()
        self.live: Dict[str, RequestDiagnostics] = {}
        self._lock = threading.Lock()
        _LOGS.add(self)

    def track(self, diag: RequestDiagnostics) -> None:
        self.live[diag.request_id] = diag

    def left(self, diag: RequestDiagnostics) -> None:
        """A request left the batch (finished or preempted)."""
        summary = diag.summary()
        with self._lock:
            self.live.pop(diag.request_id, None)
            self.finished[diag.request_id] = summary
            self.finished.move_to_end(diag.request_id)
            while len(self.finished) > KEEP_FINISHED:
                self.finished.popitem(last=False)
            if self.path is not None:
                with open(self.path, "a") as out:
                    out.write(json.dumps(summary) + "\n")

    def get(self, request_id: str) -> Optional[dict]:
        live = self.live.get(request_id)
        return live.summary() if live is not None else self.finished.get(request_id)


_LOGS: "weakref.WeakSet[DiagnosticsLog]" = weakref.WeakSet()


def current() -> Dict[str, dict]:
    """Summaries of every request the engines of this process have seen
    (live requests included), by request id."""
    merged: Dict[str, dict] = {}
    for log in list(_LOGS):
        merged.update(log.finished)
        merged.update({key: d.summary() for key, d in list(log.live.items())})
    return merged


def read_diagnostics(path) -> Dict[str, dict]:
    """The diagnostics file as {request_id: summary} (the last line of each
    request id wins: a preempted request is written again when it ends)."""
    result: Dict[str, dict] = {}
    with open(path) as lines:
        for line in lines:
            if line.strip():
                entry = json.loads(line)
                result[entry["request_id"]] = entry
    return result
