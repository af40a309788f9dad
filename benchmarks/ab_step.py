"""Before/after of the CPU op against its read floor: two builds of the
extension, timed in alternating subprocesses of one run.

Each round starts one subprocess per tree (order alternating), which times
the raw op on prepared arguments (greedy, and sampled at T=1, top_k=50,
top_p=0.9) and the read floor (`torch.amax` of both inputs) with
bench_step.py's `step_logits` and `median_times`. Prints, per case, the
median over rounds of each time and of each ratio, so a noisy machine moves
both builds alike.

    python benchmarks/ab_step.py OLD_TREE NEW_TREE --rounds 5 --threads 1

A tree is a folder holding a `blendin_ext` package with its built `_C`
(e.g. a copy of the package with the old .so in it, and the checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def child(threads: int, dtypes: str, batches: str, vocabs: str, budget: float) -> None:
    import torch

    sys.path.insert(0, HERE)
    import bench_step as bs

    from blendin_ext.ops.args import StepArgs

    torch.set_num_threads(threads)
    op = torch.ops.blendin_ext.blend_step.default
    greedy = StepArgs.build(gamma=0.4, alpha="auto", temperature=0.0)
    sampled = StepArgs.build(gamma=0.4, alpha="auto", temperature=1.0, top_k=50, top_p=0.9, seed=1)
    out = {}
    for dtype in dtypes.split(","):
        for vocab in map(int, vocabs.split(",")):
            for batch in map(int, batches.split(",")):
                base = bs.step_logits(batch, vocab, getattr(torch, dtype), "cpu", 1, [0.2, 0.7])
                guide = bs.step_logits(batch, vocab, getattr(torch, dtype), "cpu", 2, [0.8, 0.5])
                fns = {
                    "greedy": lambda b=base, g=guide: op(b, g, None, None, *greedy),
                    "sampled": lambda b=base, g=guide: op(b, g, None, None, *sampled),
                    "floor": lambda b=base, g=guide: (torch.amax(b, -1), torch.amax(g, -1)),
                }
                out[f"{dtype} {batch} {vocab}"] = bs.median_times(fns, torch.device("cpu"), budget)
    print(json.dumps(out))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", help="tree with the old build")
    parser.add_argument("new", help="tree with the new build")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtypes", default="float32,bfloat16,float16")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--vocabs", default="32000,128256,262144")
    parser.add_argument("--budget", type=float, default=0.3, help="seconds per case and round")
    parser.add_argument("--json", metavar="PATH", help="also write every round's times")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.threads, args.dtypes, args.batches, args.vocabs, args.budget)
    trees = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
    runs = {name: [] for name in trees}
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "x",
        "x",
        "--child",
        "--threads",
        str(args.threads),
        "--dtypes",
        args.dtypes,
        "--batches",
        args.batches,
        "--vocabs",
        args.vocabs,
        "--budget",
        str(args.budget),
    ]
    for r in range(args.rounds):
        for name in ["old", "new"] if r % 2 == 0 else ["new", "old"]:
            env = dict(os.environ, PYTHONPATH=trees[name])
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(done.stdout))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)
    med = statistics.median
    print(
        f"{'case':>22} {'floor us':>9} {'old us':>9} {'old x fl':>8} {'new us':>9} {'new x fl':>8}"
        f" {'new/old':>7} {'x greedy':>8}"
    )
    for case in runs["old"][0]:

        def ratio(name, a, b, case=case):
            return med(x[case][a] / x[case][b] for x in runs[name])

        new_old = med(
            n[case]["greedy"] / o[case]["greedy"] for n, o in zip(runs["new"], runs["old"])
        )
        print(
            f"{case:>22} {med(x[case]['floor'] for x in runs['new']) * 1e6:9.1f}"
            f" {med(x[case]['greedy'] for x in runs['old']) * 1e6:9.1f} {ratio('old', 'greedy', 'floor'):8.2f}"
            f" {med(x[case]['greedy'] for x in runs['new']) * 1e6:9.1f} {ratio('new', 'greedy', 'floor'):8.2f}"
            f" {new_old:7.2f} {ratio('new', 'sampled', 'greedy'):8.2f}"
        )


if __name__ == "__main__":
    main()
