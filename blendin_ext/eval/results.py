"""The results folder of one `blendin eval` run, and resuming it.

Layout::

    OUT/config.json        settings that decide the outputs (checked on resume)
    OUT/examples.jsonl     one line per (strategy, problem), appended per batch
    OUT/summary.csv|json   one row per strategy
    OUT/diagnostics.txt    the summary in words
    OUT/*.png              plots

A rerun with the same settings skips every (strategy, problem) already in
examples.jsonl; a rerun with different settings is refused so that one folder
never mixes two experiments.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

CONFIG_FILE = "config.json"
EXAMPLES_FILE = "examples.jsonl"

# Settings that may change between a run and its resumption without changing
# any result (how rows are batched, how many, where data lives, display; the
# threads, packed weights and their kernel change rounding only, like any
# kernel). Not the dtype: bf16 and float32 may choose different tokens.
_RESUME_NEUTRAL = (
    "limit",
    "batch_size",
    "data_dir",
    "out",
    "no_plots",
    "overwrite",
    "batching",
    "strategies",
    "quiet",
    "device",
    "threads",
    "pack_weights",
    "linear_kernel",
)


def json_safe(value):
    """NaN (a mean over nothing) becomes null: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class ResultsFolder:
    """Reads and appends the per-example rows of one results folder."""

    def __init__(self, out: str, config: dict, overwrite: bool = False):
        self.path = Path(out)
        self.path.mkdir(parents=True, exist_ok=True)
        self.examples_path = self.path / EXAMPLES_FILE
        if overwrite and self.examples_path.exists():
            self.examples_path.unlink()
        self._check_config(config)

    def _check_config(self, config: dict) -> None:
        config_path = self.path / CONFIG_FILE
        if config_path.exists() and self.examples_path.exists():
            old = json.loads(config_path.read_text())
            changed = sorted(
                key
                for key in set(old) | set(config)
                if key not in _RESUME_NEUTRAL and old.get(key) != config.get(key)
            )
            if changed:
                raise ValueError(
                    f"--out {self.path} holds results made with other settings "
                    f"({', '.join(changed)} differ); use another --out or --overwrite"
                )
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    def rows(self) -> list:
        """Every finished row; a torn last line (a killed run) is ignored."""
        if not self.examples_path.exists():
            return []
        rows = []
        with open(self.examples_path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return rows

    def done_keys(self) -> set:
        return {(row["strategy"], row["id"]) for row in self.rows()}

    def append(self, rows: list) -> None:
        """Adds one batch of rows and flushes, so that a kill loses at most
        the batch in flight."""
        if not rows:
            return
        self._drop_torn_tail()
        with open(self.examples_path, "a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(json_safe(row), ensure_ascii=False) + "\n")
            handle.flush()

    def replace_rows(self, rows: list) -> None:
        """Rewrites every row (after re-scoring), atomically."""
        tmp = self.examples_path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(json_safe(row), ensure_ascii=False) + "\n")
        os.replace(tmp, self.examples_path)

    def _drop_torn_tail(self) -> None:
        """A run killed mid-write leaves a last line without a newline;
        cut it so the next row starts on a line of its own."""
        if not self.examples_path.exists():
            return
        data = self.examples_path.read_bytes()
        if data and not data.endswith(b"\n"):
            self.examples_path.write_bytes(data[: data.rfind(b"\n") + 1])

    def write_json(self, name: str, payload) -> Path:
        target = self.path / name
        target.write_text(json.dumps(json_safe(payload), indent=2) + "\n")
        return target

    def write_text(self, name: str, text: str) -> Path:
        target = self.path / name
        target.write_text(text)
        return target
