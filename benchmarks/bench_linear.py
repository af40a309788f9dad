"""One bfloat16 linear layer, blendin's kernel (blendin_ext::bf16_linear)
beside oneDNN's packed linear (the other kernel of packed layers) and plain
`F.linear`, on the layer shapes of the default pair, at decode batch sizes
and a prompt's worth of rows.

In a decode step every layer's weights come from memory (the pair's weights
are far larger than the caches), so each case cycles through enough copies
of its layer to fill 256 MB: every call reads weights from memory, as in
a model.
Kernels alternate in rounds; each cell is the median per call. GB/s is the
weight bytes read per second; the ratio is blendin's time over oneDNN's in
the same run.

    python benchmarks/bench_linear.py --threads 2
    python benchmarks/bench_linear.py --rows 1 --layers "gemma3 lm_head" --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from blendin_ext.models.bf16_linear import bf16_linear, fast_bf16_linear, pack_bf16_weight
from blendin_ext.models.packing import _onednn_linear

# name: (out_features, in_features), from the configs of gemma3-270m and smollm2-135m
LAYERS = {
    "gemma3 q_proj": (1024, 640),
    "gemma3 k/v_proj": (256, 640),
    "gemma3 o_proj": (640, 1024),
    "gemma3 gate/up": (2048, 640),
    "gemma3 down": (640, 2048),
    "gemma3 lm_head": (262144, 640),
    "smollm2 q/o_proj": (576, 576),
    "smollm2 k/v_proj": (192, 576),
    "smollm2 gate/up": (1536, 576),
    "smollm2 down": (576, 1536),
    "smollm2 lm_head": (49152, 576),
}
COLD_BYTES = 256 << 20  # 8x the L3 cache of the machine the figures come from


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="1,8,64", help="rows per call (default %(default)s)")
    p.add_argument(
        "--layers",
        default=",".join(LAYERS),
        help="comma-separated, of: " + ", ".join(LAYERS) + " (default: all)",
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    args.rows = [int(r) for r in args.rows.split(",")]
    args.layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    unknown = [name for name in args.layers if name not in LAYERS]
    if unknown:
        p.error(f"--layers: unknown {unknown}; choose from {list(LAYERS)}")
    return args


def kernels(out_features: int, in_features: int):
    """name -> per-copy callables x -> y, over enough copies to be cold."""
    weight_bytes = out_features * in_features * 2
    copies = max(1, -(-COLD_BYTES // weight_bytes))
    weights = [torch.randn(out_features, in_features).bfloat16() for _ in range(copies)]
    packed = [pack_bf16_weight(w) for w in weights]
    onednn = [torch.ops.mkldnn._reorder_linear_weight(w, 1) for w in weights]
    return {
        "blendin": [lambda x, p=p: bf16_linear(x, p, None, out_features) for p in packed],
        "onednn": [lambda x, p=p: _onednn_linear(x, p, None) for p in onednn],
        "F.linear": [lambda x, w=w: F.linear(x, w) for w in weights],
    }


def time_calls(calls, x, seconds: float = 0.2) -> float:
    """Median seconds per call over about `seconds`, cycling the copies."""
    for call in calls[:2]:
        call(x)
    times, spent, i = [], 0.0, 0
    while spent < seconds or len(times) < 5:
        call = calls[i % len(calls)]
        started = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - started)
        spent += times[-1]
        i += 1
    return statistics.median(times)


def measure(name: str, rows: int, rounds: int) -> dict:
    out_features, in_features = LAYERS[name]
    impls = kernels(out_features, in_features)
    x = torch.randn(rows, in_features).bfloat16()
    samples = {k: [] for k in impls}
    for _ in range(rounds):
        for k, calls in impls.items():
            samples[k].append(time_calls(calls, x))
    cell = {k: statistics.median(v) for k, v in samples.items()}
    weight_bytes = out_features * in_features * 2
    return {
        "layer": name,
        "out": out_features,
        "in": in_features,
        "rows": rows,
        "weight_mb": weight_bytes / 1e6,
        **{f"{k}_us": v * 1e6 for k, v in cell.items()},
        "blendin_gbps": weight_bytes / cell["blendin"] / 1e9,
        "onednn_gbps": weight_bytes / cell["onednn"] / 1e9,
        "blendin_over_onednn": cell["blendin"] / cell["onednn"],
    }


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not fast_bf16_linear():
        print("note: this CPU has no AVX512_BF16; blendin runs its portable kernel here")
    print(
        f"{torch.get_num_threads()} thread(s), cold weights, median per call of "
        f"{args.rounds} alternating rounds"
    )
    header = (
        f"{'layer':<18}{'out x in':>13}{'rows':>6}{'MB':>8}{'blendin us':>12}"
        f"{'oneDNN us':>11}{'F.linear us':>13}{'blendin GB/s':>14}{'oneDNN GB/s':>13}"
        f"{'ours/oneDNN':>13}"
    )
    print(header)
    results = []
    with torch.inference_mode():
        for rows in args.rows:
            for name in args.layers:
                r = measure(name, rows, args.rounds)
                results.append(r)
                print(
                    f"{name:<18}{r['out']:>7} x {r['in']:<4}{rows:>6}{r['weight_mb']:>8.2f}"
                    f"{r['blendin_us']:>12.1f}{r['onednn_us']:>11.1f}{r['F.linear_us']:>13.1f}"
                    f"{r['blendin_gbps']:>14.1f}{r['onednn_gbps']:>13.1f}"
                    f"{r['blendin_over_onednn']:>13.2f}"
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": torch.get_num_threads(), "rows": results}, f, indent=1)


if __name__ == "__main__":
    main()
