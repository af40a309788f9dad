"""Per-request BlendIn diagnostics inside vLLM.

The processor records every step of a blended request by its position in
the output (a step whose token vLLM discards, a chunked prefill's, or one
recomputed after preemption, is overwritten by the one that counts), and
summarises it with the decode loop's `SequenceDiagnostics` (interventions,
rate, mean alpha, agreement, who won).

Keys. vLLM hands a logits processor no request id, so a request is known by
``extra_args["blendin"]["request_id"]`` when the caller gives one, else by
``request-N`` in the order requests first reach the engine. A request that
comes back after preemption (with output it already has) keeps its key:
it is matched to a request that left with the same prompt and an output
its own output starts with.

Where to read them:
- a JSON-lines file, ``additional_config.blendin.diagnostics``: a line per
  request each time it leaves the batch or finishes (the last line of a key
  wins); `read_diagnostics(path)` returns the dict. It works for ``LLM`` and
  ``vllm serve`` alike, whichever process the engine runs in; with tensor
  parallelism the first rank writes it;
- `current()` in the engine's own process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``).
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from blendin_ext.decode.diagnostics import SequenceDiagnostics

# (token, base_confidence, intervened, alpha, agree, base_top, guide_top),
# the arguments of SequenceDiagnostics.record.
Step = Tuple[int, float, bool, float, float, int, int]
KEEP_FINISHED = 10_000  # summaries kept in memory per engine
KEEP_LEFT = 1024  # requests that left, kept to recognise them if they resume


@dataclass
class RequestDiagnostics:
    """What one request's steps said, by output position."""

    request_id: str
    strategy: str
    steps: Dict[int, Step] = field(default_factory=dict)
    bad_steps: int = 0  # steps whose logits held NaN/+inf: left to vLLM
    resumed: int = 0  # times it came back after preemption
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
        return {
            "request_id": self.request_id,
            "strategy": self.strategy,
            "bad_steps": self.bad_steps,
            "resumed": self.resumed,
            "map_coverage": self.map_coverage,
            **self.sequence().summary(),
        }


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


@dataclass
class _Left:
    """A request that left the batch: enough to recognise it if it resumes."""

    prompt_ids: List[int]
    tokens: List[int]
    diagnostics: RequestDiagnostics


class DiagnosticsBook:
    """Keys and records of one engine's requests (module docstring)."""

    def __init__(self, path: Optional[str] = None):
        self.log = DiagnosticsLog(path)
        self._left: "OrderedDict[str, _Left]" = OrderedDict()
        self._count = 0

    def join(
        self, request_id: Optional[str], strategy: str, prompt_ids: List[int], tokens: List[int]
    ) -> RequestDiagnostics:
        """The record of a request entering the batch: its earlier one if it
        resumes after preemption, else a new one."""
        key = request_id if request_id is not None else self._resumed_key(prompt_ids, tokens)
        earlier = self._left.pop(key, None) if key is not None else None
        if earlier is not None and tokens:
            diag = earlier.diagnostics
            diag.resumed += 1
        else:
            if key is None:
                self._count += 1
                key = f"request-{self._count}"
            diag = RequestDiagnostics(key, strategy)
        self.log.track(diag)
        return diag

    def leave(
        self, diag: RequestDiagnostics, prompt_ids: List[int], tokens: List[int], write: bool = True
    ) -> None:
        """A request left the batch (finished, or preempted and may resume);
        write=False: its summary is already logged as it stands."""
        if write:
            self.log.left(diag)
        self._left.pop(diag.request_id, None)
        self._left[diag.request_id] = _Left(prompt_ids, list(tokens), diag)
        while len(self._left) > KEEP_LEFT:
            self._left.popitem(last=False)

    def _resumed_key(self, prompt_ids: List[int], tokens: List[int]) -> Optional[str]:
        """The key of a request that left with this prompt and an output the
        returning one starts with (a request with no output is new)."""
        if not tokens:
            return None
        for key, left in reversed(self._left.items()):
            if left.prompt_ids == prompt_ids and tokens[: len(left.tokens)] == left.tokens:
                return key
        return None


_LOGS: "weakref.WeakSet[DiagnosticsLog]" = weakref.WeakSet()


def current() -> Dict[str, dict]:
    """Summaries of every request the engines of this process have seen
    (live requests included), by key."""
    merged: Dict[str, dict] = {}
    for log in list(_LOGS):
        merged.update(log.finished)
        merged.update({key: d.summary() for key, d in list(log.live.items())})
    return merged


def last_line_by(path, key: str) -> dict:
    """A JSON-lines file as {entry[key]: the last entry with that key}."""
    result: dict = {}
    with open(path) as lines:
        for line in lines:
            if line.strip():
                entry = json.loads(line)
                result[entry[key]] = entry
    return result


def read_diagnostics(path) -> Dict[str, dict]:
    """The diagnostics file as {key: summary} (the last line of each key
    wins: a preempted request is written again when it ends)."""
    return last_line_by(path, "request_id")
