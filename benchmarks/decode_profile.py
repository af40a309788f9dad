"""torch.profiler view of a few decode steps, for closing the gap between
our loop and transformers' generate() on a GPU (bench_generate.py --profile).

For each run (a callable that decodes `tokens` new tokens), after one
warm-up call, it writes into OUT_DIR:
  profile_<name>.trace.json.gz  chrome trace, gzipped (opens in ui.perfetto.dev)
  profile_<name>.txt          top ops by self device time and by self CPU time
and returns a summary row: wall time, and per generated token the kernel
launches, host syncs (cuda*Synchronize, .item()), copies by direction and
aten copy ops. On a CPU only the aten rows mean anything.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

# name pattern -> counter, over every profiled event (host and device)
COUNTED = {
    "kernel_launches": re.compile(r"^(cudaLaunchKernel|cuLaunchKernel|cudaLaunchKernelExC)"),
    "graph_launches": re.compile(r"^cudaGraphLaunch"),
    "host_syncs": re.compile(r"^cuda(Stream|Device|Event)Synchronize$"),
    "item_calls": re.compile(r"^aten::_local_scalar_dense$"),
    "memcpy_htod": re.compile(r"^Memcpy HtoD"),
    "memcpy_dtoh": re.compile(r"^Memcpy DtoH"),
    "memcpy_dtod": re.compile(r"^Memcpy DtoD"),
    "memsets": re.compile(r"^Memset"),
    "aten_copies": re.compile(r"^aten::copy_$"),
}
TOP_OPS = 25


def profile_runs(runs: dict, tokens: int, out_dir: Path, device: torch.device) -> list:
    """Profiles each `runs[name]()` (which decodes `tokens` tokens); writes
    the files above and returns one summary dict per run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    summaries = []
    for name, run in runs.items():
        run()  # warm-up: allocator, caches, lazy initialisation
        _sync(device)
        with profile(activities=activities, record_shapes=False) as prof:
            start = time.perf_counter()
            run()
            _sync(device)
            wall = time.perf_counter() - start
        _export_gzipped_trace(prof, out_dir / f"profile_{name}.trace.json.gz")
        (out_dir / f"profile_{name}.txt").write_text(_tables(prof, device))
        counts = Counter()
        for event in prof.events():
            for key, pattern in COUNTED.items():
                if pattern.match(event.name):
                    counts[key] += 1
        summaries.append(
            dict(
                name=name,
                tokens=tokens,
                wall_s=wall,
                per_token={k: counts[k] / tokens for k in COUNTED},
                totals={k: counts[k] for k in COUNTED},
            )
        )
    (out_dir / "profile_summary.json").write_text(json.dumps(summaries, indent=1))
    return summaries


def print_summaries(summaries: list) -> None:
    keys = [
        "kernel_launches",
        "host_syncs",
        "item_calls",
        "memcpy_htod",
        "memcpy_dtoh",
        "aten_copies",
    ]
    print(f"{'profiled run':<16}{'ms/token':>10}" + "".join(f"{k:>17}" for k in keys))
    for s in summaries:
        print(
            f"{s['name']:<16}{1e3 * s['wall_s'] / s['tokens']:>10.2f}"
            + "".join(f"{s['per_token'][k]:>17.1f}" for k in keys)
        )
    print("(per generated token, prefill included; profiler overhead inflates ms/token)")


def _tables(prof, device: torch.device) -> str:
    averages = prof.key_averages()
    parts = []
    if device.type == "cuda":
        parts += [
            "top ops by self device time",
            averages.table(sort_by="self_device_time_total", row_limit=TOP_OPS),
        ]
    parts += [
        "top ops by self CPU time",
        averages.table(sort_by="self_cpu_time_total", row_limit=TOP_OPS),
    ]
    return "\n".join(parts)


def _export_gzipped_trace(prof, path: Path) -> None:
    plain = path.with_suffix("")  # the exporter writes plain JSON only
    prof.export_chrome_trace(str(plain))
    with open(plain, "rb") as src, gzip.open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    plain.unlink()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
