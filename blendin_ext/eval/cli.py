"""`blendin eval`: the paper's experiments as one command.

    blendin eval --base gemma3-270m --guide smollm2-135m-instruct \\
        --task gsm8k --strategies base,guide,nudge,blend-0.5,blendin \\
        --limit 20 --out results/eval-gsm8k

`add_parser(subparsers)` registers the subcommand on the `blendin` command
line; `run(args)` runs it; `main(argv)` runs it standalone
(``python -m blendin_ext.eval.cli``).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from blendin_ext.cli import add_model_arguments
from blendin_ext.eval.strategies import STRATEGY_HELP, parse_strategies
from blendin_ext.eval.tasks import DATA_ENV, PROMPT_STYLES, check_prompt_style, load_task

DEFAULT_STRATEGIES = "base,guide,nudge,blend-0.5,blendin"
# A base continuing "Question: ... Answer: ..." writes the next question
# itself; stopping there saves time and is how the answer is delimited.
DEFAULT_STOP = "\nQuestion:"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)  # --base/--guide/--dtype/--device/--threads/--system-prompt/--quiet

    task = parser.add_argument_group("task")
    task.add_argument("--task", default="gsm8k",
                      help="gsm8k, xstest, or a .jsonl file with question/answer fields (default %(default)s)")
    task.add_argument("--limit", type=int, default=20,
                      help="problems per strategy (XSTest: half safe, half unsafe; default %(default)s)")
    task.add_argument("--data-dir", default=None,
                      help=f"folder with the shared data (default: ${DATA_ENV} or ../shared/data)")
    task.add_argument("--prompt-style", default="zero-shot", choices=PROMPT_STYLES,
                      help="zero-shot or few-shot worked examples (default %(default)s)")

    decode = parser.add_argument_group("decoding")
    decode.add_argument("--strategies", default=DEFAULT_STRATEGIES,
                        help=f"comma-separated: {STRATEGY_HELP} (default %(default)s)")
    decode.add_argument("--gamma", type=float, default=0.4, help="uncertainty threshold (default %(default)s)")
    decode.add_argument("--agree-bonus", type=float, default=0.1, help="BlendIn's agreement bonus")
    decode.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    decode.add_argument("--top-k", type=int, default=None)
    decode.add_argument("--top-p", type=float, default=None)
    decode.add_argument("--seed", type=int, default=0)
    decode.add_argument("--max-new-tokens", type=int, default=200)
    decode.add_argument("--no-stop-at-question", action="store_true",
                        help="keep generating after the model writes a new 'Question:'")
    decode.add_argument("--eager", action="store_true",
                        help="run the guide every step (default: lazy, only where the base is unsure)")
    decode.add_argument("--batch-size", type=int, default=4)
    decode.add_argument("--batching", default="by-strategy", choices=("by-strategy", "mixed"),
                        help="by-strategy: one strategy per batch, clean per-strategy speed figures; "
                             "mixed: all strategies of a problem side by side in one batch")

    output = parser.add_argument_group("output")
    output.add_argument("--out", default=None,
                        help="results folder (default results/eval-TASK-BASE-GUIDE); rerunning resumes it")
    output.add_argument("--overwrite", action="store_true", help="discard earlier rows in --out")
    output.add_argument("--no-plots", action="store_true")
    output.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Registers `eval` on the `blendin` command line's subparsers."""
    parser = subparsers.add_parser(
        "eval", help="score strategies (base, guide, nudge, blend, BlendIn) on GSM8K, XSTest or your JSONL",
        description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.set_defaults(func=run, command_parser=parser)
    return parser


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", Path(name).name if "/" in name else name).strip("-")


def check_args(args) -> None:
    """Argument errors that argparse cannot see, each naming its option."""
    if args.limit is not None and args.limit <= 0:
        raise ValueError(f"--limit must be a positive number of problems, got {args.limit}")
    if args.max_new_tokens <= 0:
        raise ValueError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.top_k is not None and args.top_k < 0:
        raise ValueError(f"--top-k must be >= 0, got {args.top_k}")
    check_prompt_style(args.prompt_style)


def run_config(args, task) -> dict:
    """The settings recorded in config.json; those that change results are
    compared on resume (see results.py)."""
    return {
        "base": args.base, "guide": args.guide, "task": args.task, "task_kind": task.kind,
        "prompt_style": args.prompt_style, "system_prompt": args.system_prompt,
        "gamma": args.gamma, "agree_bonus": args.agree_bonus, "temperature": args.temperature,
        "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed,
        "max_new_tokens": args.max_new_tokens, "stop_at_question": not args.no_stop_at_question,
        "lazy": not args.eager, "dtype": args.dtype, "device": args.device,
        "limit": args.limit, "batch_size": args.batch_size, "batching": args.batching,
        "strategies": args.strategies,
    }


def run(args) -> int:
    """Runs `blendin eval` from parsed arguments; returns the exit status."""
    from blendin_ext.eval.backend import build_generator
    from blendin_ext.eval.results import ResultsFolder
    from blendin_ext.eval.runner import EvalSettings, run_eval

    try:
        check_args(args)
        strategies = parse_strategies(args.strategies, args.gamma)
        task = load_task(args.task, args.data_dir, args.limit)
        out = args.out or f"results/eval-{_slug(task.name)}-{_slug(args.base)}-{_slug(args.guide)}"
        folder = ResultsFolder(out, run_config(args, task), overwrite=args.overwrite)
    except (ValueError, FileNotFoundError) as exc:
        print(f"blendin eval: error: {exc}", file=sys.stderr)
        return 2
    log = (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print
    settings = EvalSettings(strategies, args.prompt_style, args.batch_size,
                            args.batching, progress=not args.quiet, plots=not args.no_plots)
    pending = len(task.examples) * len(strategies) - len(
        folder.done_keys() & {(s.name, e.id) for s in strategies for e in task.examples})
    generator = build_generator(args) if pending else None
    title = f"{task.name}: base {args.base} + guide {args.guide} ({len(task.examples)} problems)"
    result = run_eval(task, generator, settings, folder, title=title, log=log)
    if args.json:
        from blendin_ext.eval.results import json_safe

        print(json.dumps(json_safe(result), indent=2))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="blendin eval", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.set_defaults(command_parser=parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
