"""Latency of one BlendIn step: the fused op beside its baselines, same run.

Columns of the table (one row per dtype, batch B and vocabulary V; times
are microseconds per call, "us"):
  fused us   blendin_ext.blend_step (greedy, alpha="auto", gamma=0.4), the
             public wrapper (argument checks in Python included)
  op us      the same step as the decode loop calls it: the raw op on
             prepared arguments (blendin_ext.ops.fused.run_step)
  sampled    the raw op sampling at T=1 with top_k=50, top_p=0.9
  eager us   blendin_ext.ops.reference.blend_step, the semantics composed of
             PyTorch ops
  compiled   torch.compile of the greedy step composed of batched PyTorch
             ops (softmax of both models, decision, mixture argmax)
  lse us     torch.logsumexp over both logit tensors (one read and an exp)
  floor us   the read floor: torch.amax over both logit tensors, the least
             any exact method must do (one read of every logit)
  x floor    fused / floor;  op x fl: op / floor (1.00 = at the read floor)
  x greedy   sampled / op: what sampling costs over greedy
  x eager    eager / fused;  x compl: compiled / fused (speed-ups, > 1 is faster)
  GB/s       bytes of both logit tensors read by the fused call per second
  kernel us  (cuda) the fused step's GPU time alone: 20 steps captured in a
             CUDA graph and replayed, so host overhead drops out; kern GB/s
             the bandwidth it implies and % peak its share of the card's peak
  fi_*       (cuda, when `import flashinfer` works) FlashInfer's softmax of
             both models and sampling_from_logits of the base, same shapes
With --variants (cuda), a second table times each CUDA kernel variant
(torch.ops.blendin_ext.cuda_kernel_variants()) in the same process, graph-
timed like `kernel`: greedy, sampled (T=1, top_k=50, top_p=0.9) and top-p
alone (T=1, top_p=0.95), each with its ratio to the first variant listed.
The table is printed; --json PATH also writes its rows (and the run's
machine, threads and versions) as JSON, after every case.

Half of the rows intervene (base top-1 prob 0.2 vs 0.7). Timings are
medians over interleaved repetitions after a warm-up (CUDA events on a GPU),
so the ratios within one row are comparable even on a noisy machine.

    python benchmarks/bench_step.py                  # CPU, full grid
    python benchmarks/bench_step.py --quick --json out.json
    python benchmarks/bench_step.py --no-compile     # skip torch.compile (about 20 s a case)
    python benchmarks/bench_step.py --device cuda    # GPU grid
    python benchmarks/bench_step.py --device cuda --variants all   # + kernel variants
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import torch

import blendin_ext
from blendin_ext.ops import reference
from blendin_ext.ops.args import StepArgs
from blendin_ext.ops.fused import run_step

GRIDS = {
    "cpu": dict(batches=[1, 8, 64], vocabs=[32000, 128256, 262144]),
    "cuda": dict(batches=[1, 8, 64, 256], vocabs=[32000, 128256, 151936, 262144]),
}
QUICK = dict(batches=[1, 8], vocabs=[32000, 128256])


def step_logits(batch: int, vocab: int, dtype, device, seed: int, confidences) -> torch.Tensor:
    """Zipf-shaped logits (like a language model's) whose top-1 probability
    cycles through `confidences` across rows."""
    gen = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, vocab + 1, dtype=torch.float64)
    rows = []
    for row in range(batch):
        x = -1.1 * torch.log(ranks) + 0.3 * torch.randn(vocab, generator=gen, dtype=torch.float64)
        x = x[torch.randperm(vocab, generator=gen)]
        top = int(torch.argmax(x))
        target = confidences[row % len(confidences)]
        rest = torch.logsumexp(torch.cat([x[:top], x[top + 1 :]]), 0)
        x[top] = rest + math.log(target / (1 - target))
        rows.append(x)
    return torch.stack(rows).to(device=device, dtype=dtype)


def make_timer(device: torch.device):
    """Returns time_once(fn) -> seconds for one call."""
    if device.type == "cuda":

        def time_once(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
    else:

        def time_once(fn):
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

    return time_once


def median_times(fns: dict, device, budget_s: float, max_reps: int = 2000) -> dict:
    """Median seconds per call of each fn, measured in interleaved rounds."""
    time_once = make_timer(device)
    for fn in fns.values():  # warm-up (and first-call allocations)
        for _ in range(3):
            fn()
    samples = {name: [] for name in fns}
    started = time.perf_counter()
    while True:
        for name, fn in fns.items():
            samples[name].append(time_once(fn))
        reps = len(next(iter(samples.values())))
        if reps >= max_reps or (reps >= 7 and time.perf_counter() - started > budget_s):
            break
    return {name: statistics.median(times) for name, times in samples.items()}


# Peak DRAM bandwidth (GB/s) of cards whose properties do not report it.
PEAK_GB_S = {
    "H200": 4800,
    "H100 NVL": 3900,
    "H100 PCIe": 2000,
    "H100": 3350,
    "A100-SXM4-80GB": 2039,
    "A100 80GB PCIe": 1935,
    "A100": 1555,
    "L40S": 864,
    "A10G": 600,
    "L4": 300,
}


def peak_bandwidth_gb_s():
    """The current GPU's peak memory bandwidth, or None if unknown."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:
        return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9  # double data rate
    for name, peak in PEAK_GB_S.items():
        if name in props.name:
            return float(peak)
    return None


def graph_step_seconds(fn, steps: int = 20, rounds: int = 15) -> float:
    """GPU time of one call of fn: `steps` calls captured in a CUDA graph,
    replayed `rounds` times (median), so launch and host costs drop out."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()  # warm-up on the capture stream (first-call buffers)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for _ in range(steps):
            fn()
    time_once = make_timer(torch.device("cuda"))
    graph.replay()
    return statistics.median(time_once(graph.replay) for _ in range(rounds)) / steps


def flashinfer_fns(base, guide):
    """FlashInfer's nearest kernels on the same logits, when installed."""
    try:
        import flashinfer.sampling as fi
    except Exception:  # noqa: BLE001 - not installed, or built for another torch/CUDA
        return {}
    fns = {
        "fi_softmax": lambda: (fi.softmax(base), fi.softmax(guide)),
        "fi_sample": lambda: fi.sampling_from_logits(base),
    }
    usable = {}
    for name, fn in fns.items():
        try:
            fn()
            usable[name] = fn
        except Exception as exc:  # noqa: BLE001 - e.g. a dtype this version does not take
            print(f"# {name} skipped: {type(exc).__name__}: {exc}")
    return usable


def cuda_columns(base, guide, fused, batch, vocab):
    """kernel time, GB/s, % of peak, and FlashInfer times for one case."""
    read_bytes = 2 * batch * vocab * base.element_size()
    kernel_s = graph_step_seconds(fused)
    peak = peak_bandwidth_gb_s()
    row = {
        "kernel_us": kernel_s * 1e6,
        "kernel_gb_s": read_bytes / kernel_s / 1e9,
        "peak_gb_s": peak,
    }
    row["pct_of_peak"] = 100 * row["kernel_gb_s"] / peak if peak else None
    for name, fn in flashinfer_fns(base, guide).items():
        try:
            row[f"{name}_us"] = graph_step_seconds(fn) * 1e6
        except Exception:  # noqa: BLE001 - not capturable in this version: time it eagerly
            row[f"{name}_us"] = median_times({name: fn}, torch.device("cuda"), 0.2)[name] * 1e6
    return row


VARIANT_STEPS = {
    "greedy": dict(gamma=0.4, alpha="auto", temperature=0.0),
    "sampled": dict(gamma=0.4, alpha="auto", temperature=1.0, top_k=50, top_p=0.9, seed=1),
    "top_p": dict(gamma=0.4, alpha="auto", temperature=1.0, top_p=0.95, seed=1),
}


def variant_columns(base, guide, variants) -> dict:
    """Graph-timed kernel of every step kind under each CUDA kernel variant,
    and each time's ratio to the first variant's. The variant in use is
    restored afterwards."""
    before = torch.ops.blendin_ext.cuda_kernel_variant()
    row = {}
    try:
        for variant in variants:
            torch.ops.blendin_ext.set_cuda_kernel_variant(variant)
            for kind, kwargs in VARIANT_STEPS.items():
                step = StepArgs.build(**kwargs)
                row[f"{variant}_{kind}_us"] = (
                    graph_step_seconds(lambda step=step: run_step(base, guide, None, step)) * 1e6
                )
    finally:
        torch.ops.blendin_ext.set_cuda_kernel_variant(before)
    for variant in variants:
        for kind in VARIANT_STEPS:
            row[f"{variant}_{kind}_x"] = (
                row[f"{variant}_{kind}_us"] / row[f"{variants[0]}_{kind}_us"]
            )
    return row


def composed_greedy_step(base, guide, gamma: float = 0.4, agree_bonus: float = 0.1):
    """The greedy step (shared vocabulary, alpha "auto") as a user would
    compose it from batched PyTorch ops; the baseline torch.compile gets."""
    p_b, p_g = torch.softmax(base.float(), -1), torch.softmax(guide.float(), -1)
    c_b, _ = p_b.max(-1)
    c_g, guide_choice = p_g.max(-1)
    agree = p_b.gather(1, guide_choice[:, None]).squeeze(1)
    intervened = c_b < gamma
    alpha = torch.clamp(c_g / (c_b + c_g) + agree_bonus * agree, 0.0, 1.0) * intervened
    mixture = alpha[:, None] * p_g + (1.0 - alpha[:, None]) * p_b
    return mixture.argmax(-1), intervened, alpha, c_b, c_g, agree


def compiled_step(base, guide):
    """torch.compile of composed_greedy_step for these shapes (a fresh
    compile per case, so the recompile limit never sends it back to eager)."""
    torch._dynamo.reset()
    fn = torch.compile(composed_greedy_step, dynamic=False)
    fn(base, guide)  # compile now, outside the timed rounds
    return lambda: fn(base, guide)


def bench_case(batch, vocab, dtype, device, budget_s, compile_baseline=True, variants=()):
    base = step_logits(batch, vocab, dtype, device, seed=1, confidences=[0.2, 0.7])
    guide = step_logits(batch, vocab, dtype, device, seed=2, confidences=[0.8, 0.5])
    kwargs = dict(gamma=0.4, alpha="auto", temperature=0.0)
    greedy = StepArgs.build(**kwargs)
    sampled = StepArgs.build(gamma=0.4, alpha="auto", temperature=1.0, top_k=50, top_p=0.9, seed=1)
    fns = {
        "fused": lambda: blendin_ext.blend_step(base, guide, **kwargs),
        "op": lambda: run_step(base, guide, None, greedy),
        "sampled": lambda: run_step(base, guide, None, sampled),
        "eager": lambda: reference.blend_step(base, guide, **kwargs),
        "lse": lambda: (torch.logsumexp(base, -1), torch.logsumexp(guide, -1)),
        "floor": lambda: (torch.amax(base, -1), torch.amax(guide, -1)),
    }
    if compile_baseline:
        fns["compiled"] = compiled_step(base, guide)
    out = fns["fused"]()
    intervened = float(out.intervened.float().mean())
    times = median_times(fns, torch.device(device), budget_s)
    read_bytes = 2 * batch * vocab * base.element_size()
    us = {f"{name}_us": t * 1e6 for name, t in times.items()}
    row = {
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "batch": batch,
        "vocab": vocab,
        "intervened": intervened,
        **us,
        "compiled_us": us.get("compiled_us"),
        "speedup_vs_eager": times["eager"] / times["fused"],
        "speedup_vs_compiled": times["compiled"] / times["fused"] if compile_baseline else None,
        "fused_x_floor": times["fused"] / times["floor"],
        "op_x_floor": times["op"] / times["floor"],
        "sampled_x_greedy": times["sampled"] / times["op"],
        "fused_gb_s": read_bytes / times["fused"] / 1e9,
    }
    if torch.device(device).type == "cuda":
        row.update(cuda_columns(base, guide, fns["fused"], batch, vocab))
        if variants:
            row.update(variant_columns(base, guide, variants))
    return row


def _cell(value, width, fmt=".1f"):
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"


# (header, row key, width, format) of the table's columns, in order.
COLUMNS = [
    ("fused us", "fused_us", 9, ".1f"),
    ("op us", "op_us", 9, ".1f"),
    ("sampled", "sampled_us", 9, ".1f"),
    ("eager us", "eager_us", 10, ".1f"),
    ("compiled", "compiled_us", 10, ".1f"),
    ("lse us", "lse_us", 9, ".1f"),
    ("floor us", "floor_us", 9, ".1f"),
    ("x floor", "fused_x_floor", 7, ".2f"),
    ("op x fl", "op_x_floor", 7, ".2f"),
    ("x greedy", "sampled_x_greedy", 8, ".2f"),
    ("x eager", "speedup_vs_eager", 7, ".1f"),
    ("x compl", "speedup_vs_compiled", 7, ".1f"),
    ("GB/s", "fused_gb_s", 6, ".1f"),
]
GPU_COLUMNS = [
    ("kernel us", "kernel_us", 10, ".1f"),
    ("kern GB/s", "kernel_gb_s", 10, ".1f"),
    ("% peak", "pct_of_peak", 7, ".1f"),
    ("fi smax us", "fi_softmax_us", 10, ".1f"),
    ("fi samp us", "fi_sample_us", 10, ".1f"),
]


def print_table(rows):
    columns = COLUMNS + (GPU_COLUMNS if any("kernel_us" in r for r in rows) else [])
    header = f"{'dtype':>8} {'B':>4} {'V':>7}" + "".join(f" {h:>{w}}" for h, _, w, _ in columns)
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['dtype']:>8} {r['batch']:>4} {r['vocab']:>7}"
            + "".join(f" {_cell(r.get(key), w, fmt)}" for _, key, w, fmt in columns)
        )


def print_variant_table(rows, variants):
    """Each variant's graph-timed kernel per step kind, with its ratio to the
    first variant's."""
    cells = [(f"{v[:10]} {kind}", f"{v}_{kind}") for v in variants for kind in VARIANT_STEPS]
    header = f"{'dtype':>8} {'B':>4} {'V':>7}" + "".join(f" {h:>22}" for h, _ in cells)
    print(f"# kernel variants, graph-timed us (x {variants[0]})")
    print(header)
    print("-" * len(header))
    for r in rows:
        line = f"{r['dtype']:>8} {r['batch']:>4} {r['vocab']:>7}"
        for _, key in cells:
            line += f" {r[key + '_us']:>13.1f} ({r[key + '_x']:>5.2f}x)"
        print(line)


def parse_variants(text):
    """--variants: "all" or a comma list of names cuda_kernel_variants() knows."""
    known = list(torch.ops.blendin_ext.cuda_kernel_variants())
    if text == "all":
        return known
    names = [v for v in text.split(",") if v]
    unknown = [v for v in names if v not in known]
    if unknown or not names:
        raise SystemExit(
            f"--variants: unknown {unknown or text!r}; choose from all, " + ", ".join(known)
        )
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtypes", default="float32,bfloat16,float16")
    parser.add_argument("--quick", action="store_true", help="a small grid for smoke runs")
    parser.add_argument("--batches", help="comma-separated batch sizes (overrides the grid)")
    parser.add_argument("--vocabs", help="comma-separated vocabulary sizes (overrides the grid)")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per case (approx.)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        help="skip the torch.compile baseline (it compiles once per case)",
    )
    parser.add_argument(
        "--variants",
        default=None,
        help="(cuda) also time these CUDA kernel variants side by side: 'all' or "
        "a comma list of torch.ops.blendin_ext.cuda_kernel_variants()",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads for every column (default: torch's choice). On a "
        "shared machine, 1 avoids thread-pool stalls that swamp the baselines",
    )
    args = parser.parse_args(argv)
    variants = parse_variants(args.variants) if args.variants else []
    if variants and args.device != "cuda":
        parser.error("--variants times CUDA kernels: add --device cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = dict(QUICK if args.quick else GRIDS[args.device])
    if args.batches:
        grid["batches"] = [int(b) for b in args.batches.split(",")]
    if args.vocabs:
        grid["vocabs"] = [int(v) for v in args.vocabs.split(",")]
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "device": args.device,
        "cpu_variant": torch.ops.blendin_ext.cpu_variant(),
    }
    if args.device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
        meta["peak_gb_s"] = peak_bandwidth_gb_s()
        meta["cuda_kernel_variant"] = torch.ops.blendin_ext.cuda_kernel_variant()
    rows = []
    for dtype in [getattr(torch, name) for name in args.dtypes.split(",")]:
        for vocab in grid["vocabs"]:
            for batch in grid["batches"]:
                rows.append(
                    bench_case(
                        batch, vocab, dtype, args.device, args.budget, args.compile, variants
                    )
                )
                if args.json:  # after every case, so a run cut short keeps its rows
                    with open(args.json, "w") as f:
                        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"# blend_step latency, median per call; {meta}")
    print_table(rows)
    if variants:
        print()
        print_variant_table(rows, variants)
    return rows


if __name__ == "__main__":
    main()
