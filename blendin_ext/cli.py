"""The `blendin` command line.

    blendin generate --base gemma3-270m --guide smollm2-135m-instruct \\
        --prompt "Question: What is the capital of France?\\nAnswer:"
    blendin demo                  # the default offline pair, three strategies side by side
    blendin bench generate --quick
    blendin models                # built-in model names and whether they are installed

Models are built-in names (see `blendin models`), Hugging Face ids or
folders, or .gguf files (converted once into a cache; see
blendin_ext.loading). Other subcommands (`blendin eval`) register themselves
through an ``add_parser(subparsers)`` function (see `SUBCOMMAND_MODULES`).
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from blendin_ext.strategies import STRATEGIES

DEFAULT_BASE = "gemma3-270m"
DEFAULT_GUIDE = "smollm2-135m-instruct"
DTYPES = ("float32", "bfloat16", "float16")
# Modules whose add_parser(subparsers) adds a subcommand; a missing one is skipped.
SUBCOMMAND_MODULES = ("blendin_ext.eval.cli",)
BENCHMARKS = {"step": "bench_step.py", "generate": "bench_generate.py", "pair": "bench_pair.py"}


# ------------------------------------------------------------------ terminal
class Style:
    """ANSI colours, only when the stream is a terminal."""

    CODES = {"guide": "32", "base": "33", "both": "36", "neither": "35", "dim": "2", "bold": "1"}

    def __init__(self, stream=None, enabled: Optional[bool] = None):
        stream = sys.stdout if stream is None else stream
        self.enabled = stream.isatty() if enabled is None else enabled

    def __call__(self, text: str, what: str) -> str:
        if not self.enabled or not text or what not in self.CODES:
            return text
        return f"\033[{self.CODES[what]}m{text}\033[0m"


def fmt(value, digits: int = 2) -> str:
    """A number for a table: '-' for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------- arguments
def alpha_value(text: str):
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'must be "auto" or a number in [0, 1], got {text!r}')
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument("--base", default=DEFAULT_BASE,
                       help="base model: built-in name, HF id or folder, or .gguf file "
                            "(default %(default)s)")
    group.add_argument("--guide", default=DEFAULT_GUIDE,
                       help="guide (aligned) model, same forms (default %(default)s)")
    group.add_argument("--dtype", default="float32", choices=DTYPES)
    group.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    group.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: torch's choice; 1 is faster on a busy "
                            "machine)")
    group.add_argument("--system-prompt", default=None,
                       help="system message of the guide's chat prompt")
    group.add_argument("--quiet", action="store_true", help="no progress bars or loading messages")


def add_decode_arguments(parser: argparse.ArgumentParser, *, max_new_tokens: int) -> None:
    group = parser.add_argument_group("decoding")
    group.add_argument("--strategy", default="blendin", choices=sorted(STRATEGIES),
                       help="base / guide only, nudging (hard switch), blend (fixed alpha), "
                            "blendin (the paper's reliability weight), ensemble "
                            "(default %(default)s)")
    group.add_argument("--gamma", type=float, default=0.4,
                       help="the guide joins where the base's top-1 prob < gamma (default 0.4)")
    group.add_argument("--alpha", type=alpha_value, default="auto",
                       help='guide weight for blend / ensemble: "auto" or a number in [0, 1]')
    group.add_argument("--agree-bonus", type=float, default=0.1)
    group.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    group.add_argument("--top-k", type=int, default=None)
    group.add_argument("--top-p", type=float, default=None)
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    group.add_argument("--stop", action="append", default=None, metavar="TEXT",
                       help="stop string (repeatable); it is cut from the text")
    group.add_argument("--lazy", action="store_true",
                       help="run the guide only at steps where the base is unsure (same tokens)")


def check_decode_arguments(args) -> None:
    """Argument errors argparse cannot see; each names its option (exit 2)."""
    problems = [
        (args.gamma < 0, f"--gamma must be >= 0, got {args.gamma}"),
        (args.temperature < 0, f"--temperature must be >= 0, got {args.temperature}"),
        (args.top_k is not None and args.top_k < 0, f"--top-k must be >= 0, got {args.top_k}"),
        (args.top_p is not None and not 0 < args.top_p <= 1,
         f"--top-p must be in (0, 1], got {args.top_p}"),
        (args.max_new_tokens < 1, f"--max-new-tokens must be >= 1, got {args.max_new_tokens}"),
        (any(not s for s in args.stop or ()), "--stop needs a non-empty string"),
    ]
    for failed, message in problems:
        if failed:
            args.command_parser.error(message)


def decode_options(args) -> dict:
    return dict(strategy=args.strategy, gamma=args.gamma, alpha=args.alpha,
                agree_bonus=args.agree_bonus, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, seed=args.seed, max_new_tokens=args.max_new_tokens,
                stop=args.stop, lazy=args.lazy)


# ------------------------------------------------------------------- loading
def load_pair(args):
    """(generator, base LoadedModel, guide LoadedModel) from --base/--guide."""
    import torch

    from blendin_ext.generate import BlendInGenerator
    from blendin_ext.loading import load_model

    if args.threads is not None:
        if args.threads < 1:
            args.command_parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    base = load_model(args.base, dtype=dtype, device=args.device, progress=not args.quiet)
    guide = load_model(args.guide, dtype=dtype, device=args.device, progress=not args.quiet)
    generator = BlendInGenerator(base.model, guide.model, base.tokenizer, guide.tokenizer,
                                 system_prompt=args.system_prompt)
    return generator, base, guide


def map_summary(generator) -> Optional[str]:
    report = getattr(generator.guide, "map_report", None)
    return report.summary() if report is not None else None


# ------------------------------------------------------------------ generate
def diagnostics_lines(result, tokenizer, style: Style, coverage=None) -> list:
    """The short summary printed after a generated text."""
    diag = result.diagnostics
    wins = diag.wins
    lines = [
        f"tokens {diag.tokens} ({result.finish_reason}), interventions {diag.intervention_count} "
        f"(rate {diag.intervention_rate:.2f}), mean alpha {fmt(diag.mean_alpha)}, "
        f"mean agreement {fmt(diag.mean_agree)}"
        + (f", map coverage {fmt(coverage)}" if coverage is not None else ""),
        "won by: " + ", ".join(style(f"{name} {count}", name) for name, count in wins.items()),
    ]
    guide_won = [i for i in diag.interventions if i.winner == "guide"]
    if guide_won:
        shown = ", ".join(f"#{i.position} {tokenizer.decode([i.token])!r}" for i in guide_won[:12])
        more = f" (+{len(guide_won) - 12} more)" if len(guide_won) > 12 else ""
        lines.append(f"guide won at {shown}{more}")
    return lines


def result_json(result, coverage=None) -> dict:
    return {"prompt": result.prompt, "text": result.text, "finish_reason": result.finish_reason,
            "diagnostics": result.diagnostics.summary(), "map_coverage": coverage}


def run_generate(args) -> int:
    check_decode_arguments(args)
    generator, base, guide = load_pair(args)
    style = Style()
    out = sys.stdout
    if args.json or len(args.prompt) > 1:
        started = time.perf_counter()
        output = _generate_with_progress(generator, args)
        seconds = time.perf_counter() - started
    else:  # one prompt: stream its text, guide-won tokens coloured in a terminal
        started = time.perf_counter()
        for event in generator.stream(args.prompt, **decode_options(args)):
            winner = event.intervention.winner if event.intervention is not None else None
            out.write(style(event.text, winner) if winner else event.text)
            out.flush()
        seconds = time.perf_counter() - started
        out.write("\n")
        output = generator.last_output
    coverage = _coverage(generator, len(args.prompt))
    generated = output.stats.generated_tokens
    if args.json:
        print(json.dumps({
            "base": args.base, "guide": args.guide, "load_seconds": {
                "base": base.load_seconds, "guide": guide.load_seconds},
            "map": map_summary(generator), "results": [
                result_json(r, c) for r, c in zip(output.results, coverage)],
            "stats": output.stats.summary(), "tokens_per_second": generated / seconds,
        }, indent=2))
        return 0
    for index, (result, cover) in enumerate(zip(output.results, coverage)):
        if len(args.prompt) > 1:
            print(style(f"--- prompt {index + 1}: {result.prompt!r}", "bold"))
            print(result.text)
        for line in diagnostics_lines(result, base.tokenizer, style, cover):
            print(style("[blendin] ", "dim") + line)
    print(style("[blendin] ", "dim") + f"{generated} tokens in {seconds:.1f} s "
          f"({generated / seconds:.1f} tokens/s), guide forwards {output.stats.guide_forwards}"
          + (f"; {map_summary(generator)}" if map_summary(generator) else ""))
    return 0


def _generate_with_progress(generator, args):
    """A batch with a progress bar over decode steps (on stderr)."""
    from tqdm.auto import tqdm

    with tqdm(total=args.max_new_tokens, desc=f"{len(args.prompt)} prompt(s)", unit="step",
              disable=args.quiet, file=sys.stderr, leave=False) as bar:
        for event in generator.stream(args.prompt, **decode_options(args)):
            if event.position >= bar.n:
                bar.update(event.position + 1 - bar.n)
    return generator.last_output


def _coverage(generator, rows: int) -> list:
    by_row = getattr(generator.guide, "coverage_by_row", None)
    return by_row() if by_row is not None else [None] * rows


# --------------------------------------------------------------- bench, models
def run_bench(args) -> int:
    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    # "all" means the synthetic ones; "pair" needs real models.
    names = ["step", "generate"] if args.which == "all" else [args.which]
    for name in names:
        script = folder / BENCHMARKS[name]
        if not script.is_file():
            args.command_parser.error(f"{script} not found: the benchmarks live in the source checkout "
                         "(install it with `pip install -e .`)")
        extra = [a for a in args.args if a != "--"]
        print(f"[blendin] {sys.executable} {script} {' '.join(extra)}", file=sys.stderr)
        status = subprocess.call([sys.executable, str(script), *extra])
        if status != 0:
            return status
    return 0


def run_models(args) -> int:
    from blendin_ext.loading import builtin_status, cache_dir

    rows = builtin_status()
    if args.json:
        print(json.dumps({"cache": str(cache_dir()), "models": rows}, indent=2))
        return 0
    print(f"cache: {cache_dir()}  (set BLENDIN_CACHE to move it)")
    for row in rows:
        state = ("converted" if row["converted"] else "installed") if row["installed"] else "missing"
        print(f"  {row['name']:<30} {state:<10} {row['description']}")
        if not row["installed"]:
            print(f"  {'':<30} install: {row['install']}")
    return 0


# -------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from blendin_ext import demo

    parser = argparse.ArgumentParser(
        prog="blendin", description="BlendIn decoding: a base model guided by a small aligned "
        "model where the base is unsure.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gen = sub.add_parser("generate", help="generate text from one or more prompts",
                         description="Generates with BlendIn (or a baseline strategy), streaming "
                         "the text, then prints intervention diagnostics.")
    gen.add_argument("--prompt", action="append", required=True,
                     help="prompt text (repeat for a batch); the base sees it as is, the guide "
                          "inside its chat template")
    add_model_arguments(gen)
    add_decode_arguments(gen, max_new_tokens=64)
    gen.add_argument("--json", action="store_true", help="print the results as JSON (no streaming)")
    gen.set_defaults(func=run_generate, command_parser=gen)

    demo.add_parser(sub)

    bench = sub.add_parser("bench", help="run the benchmarks in benchmarks/",
                           description="Runs benchmarks/bench_step.py (the fused op), "
                           "bench_generate.py (the loop, random models) or bench_pair.py (a real "
                           "pair) with this Python; arguments after WHICH go to the script.")
    bench.add_argument("which", choices=[*BENCHMARKS, "all"])
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    bench.set_defaults(func=run_bench, command_parser=bench)

    models = sub.add_parser("models", help="list the built-in model names and their state")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=run_models, command_parser=models)

    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    from blendin_ext.loading import MissingModelPackage

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MissingModelPackage as exc:
        print(f"blendin {args.command}: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as exc:
        print(f"blendin {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
