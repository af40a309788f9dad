"""`blendin bench`: runs a script of the source checkout's benchmarks/
folder with this Python (the benchmarks are not installed with the package)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCHMARKS = {
    "step": "bench_step.py",
    "generate": "bench_generate.py",
    "pair": "bench_pair.py",
    "linear": "bench_linear.py",
}
FOLDER = Path(__file__).resolve().parents[2] / "benchmarks"


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "bench",
        help="run the benchmarks in benchmarks/",
        description="Runs benchmarks/bench_step.py (the fused op), bench_generate.py (the loop, "
        "random models), bench_pair.py (a real pair) or bench_linear.py (the "
        "packed linear kernels) with this Python; arguments "
        "after WHICH go to the script. Each prints a table; --json PATH also "
        "writes it as JSON, and `blendin bench WHICH --help` explains the script's "
        "options and every column.",
    )
    parser.add_argument("which", choices=[*BENCHMARKS, "all"])
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    parser.set_defaults(func=run, command_parser=parser)
    return parser


def run(args) -> int:
    # "all" means the synthetic ones; "pair" needs real models.
    names = ["step", "generate", "linear"] if args.which == "all" else [args.which]
    for name in names:
        script = FOLDER / BENCHMARKS[name]
        if not script.is_file():
            args.command_parser.error(
                f"{script} not found: the benchmarks live in the source "
                "checkout (install it with `pip install -e .`)"
            )
        extra = [a for a in args.args if a != "--"]
        print(f"[blendin] {sys.executable} {script} {' '.join(extra)}", file=sys.stderr)
        status = subprocess.call([sys.executable, str(script), *extra])
        if status != 0:
            return status
    return 0
