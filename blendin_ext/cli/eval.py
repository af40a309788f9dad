"""`blendin eval`: the paper's experiments as one command.

    blendin eval --base gemma3-270m --guide smollm2-135m-instruct \\
        --task gsm8k --strategies base,guide,nudging,blend-0.5,blendin \\
        --limit 20 --out results/eval-gsm8k

Runs every strategy on the same problems, scores them (GSM8K accuracy,
XSTest refusal, clean endings) and writes a results folder (summary table,
diagnostics in words, plots); rerunning with the same settings resumes it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from blendin_ext.cli.args import (
    COUNT,
    add_decode_arguments,
    add_model_arguments,
    decode_options,
    strategy_choices,
)
from blendin_ext.cli.common import load_pair
from blendin_ext.cli.extras import PLOTS, PROGRESS, optional, require
from blendin_ext.eval.tasks import DATA_ENV, PROMPT_STYLES, QUESTION_STOP, load_task

DEFAULT_STRATEGIES = "base,guide,nudging,blend-0.5,blendin"


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "eval",
        help="score strategies (base, guide, nudging, blend, BlendIn) on GSM8K, XSTest "
        "or your JSONL",
        description=__doc__.split("\n\n")[0],
    )
    add_model_arguments(parser)

    task = parser.add_argument_group("task")
    task.add_argument(
        "--task",
        default="gsm8k",
        help="gsm8k, xstest, or a .jsonl file with question/answer fields (default %(default)s)",
    )
    task.add_argument(
        "--limit",
        type=COUNT,
        default=20,
        help="problems per strategy (XSTest: half safe, half unsafe; default %(default)s)",
    )
    task.add_argument(
        "--data-dir",
        default=None,
        help=f"folder with gsm8k_test.jsonl / xstest_prompts.csv (default: "
        f"${DATA_ENV}, else the copies shipped with the package)",
    )
    task.add_argument(
        "--prompt-style",
        default="zero-shot",
        choices=PROMPT_STYLES,
        help="zero-shot or few-shot worked examples (default %(default)s)",
    )

    decode = add_decode_arguments(
        parser, max_new_tokens=200, strategies=DEFAULT_STRATEGIES, stop=False
    )
    decode.add_argument(
        "--no-stop-at-question",
        action="store_true",
        help="keep generating after the model writes a new 'Question:'",
    )
    decode.add_argument("--batch-size", type=COUNT, default=4)
    decode.add_argument(
        "--batching",
        default="by-strategy",
        choices=("by-strategy", "mixed"),
        help="by-strategy: one strategy per batch, clean per-strategy speed "
        "figures; mixed: all strategies of a problem side by side in one "
        "batch",
    )

    output = parser.add_argument_group("output")
    output.add_argument(
        "--out",
        default=None,
        help="results folder (default results/eval-TASK-BASE-GUIDE); rerunning resumes it",
    )
    output.add_argument("--overwrite", action="store_true", help="discard earlier rows in --out")
    output.add_argument("--no-plots", action="store_true")
    output.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    parser.set_defaults(func=run, command_parser=parser)
    return parser


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", Path(name).name if "/" in name else name).strip("-")


def _dtype_name(args) -> str:
    """The dtype the run loads in ("auto" resolved), for config.json."""
    from blendin_ext.models.loading import resolve_dtype

    return str(resolve_dtype(args.dtype, args.device, log=False)).replace("torch.", "")


def run_config(args, task) -> dict:
    """The settings recorded in config.json; those that change results are
    compared on resume (see blendin_ext.eval.results)."""
    return {
        "base": args.base,
        "guide": args.guide,
        "task": args.task,
        "task_kind": task.kind,
        "prompt_style": args.prompt_style,
        "system_prompt": args.system_prompt,
        "gamma": args.gamma,
        "alpha": args.alpha,
        "agree_bonus": args.agree_bonus,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "seed": args.seed,
        "max_new_tokens": args.max_new_tokens,
        "stop_at_question": not args.no_stop_at_question,
        "lazy": args.lazy,
        "guide_sync": args.guide_sync,
        "dtype": _dtype_name(args),
        "pack_weights": args.pack_weights,
        "linear_kernel": args.linear_kernel,
        "device": args.device,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "batching": args.batching,
        "strategies": args.strategies,
    }


def build_generator(args):
    """The pair from --base/--guide, wrapped for the runner."""
    from blendin_ext.eval.backend import EvalGenerator

    blend, _, _ = load_pair(args)
    stop = None if args.no_stop_at_question else [QUESTION_STOP]
    return EvalGenerator(blend, decode_options(args, stop=stop))


def run(args) -> int:
    """Runs `blendin eval` from parsed arguments; returns the exit status."""
    from blendin_ext.eval.results import ResultsFolder, json_safe
    from blendin_ext.eval.runner import EvalSettings, run_eval

    strategies = strategy_choices(args)
    require(PROGRESS, "blendin eval")
    plots = not args.no_plots and optional(PLOTS, "the plots")
    task = load_task(args.task, args.data_dir, args.limit)
    out = args.out or f"results/eval-{_slug(task.name)}-{_slug(args.base)}-{_slug(args.guide)}"
    folder = ResultsFolder(out, run_config(args, task), overwrite=args.overwrite)
    log = (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print
    settings = EvalSettings(
        strategies,
        args.prompt_style,
        args.batch_size,
        args.batching,
        progress=not args.quiet,
        plots=plots,
    )
    pending = len(task.examples) * len(strategies) - len(
        folder.done_keys() & {(s.name, e.id) for s in strategies for e in task.examples}
    )
    generator = build_generator(args) if pending else None
    title = f"{task.name}: base {args.base} + guide {args.guide} ({len(task.examples)} problems)"
    result = run_eval(task, generator, settings, folder, title=title, log=log)
    if args.json:
        print(json.dumps(json_safe(result), indent=2))
    return 0
