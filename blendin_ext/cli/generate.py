"""`blendin generate`: stream one prompt (guide-won tokens coloured in a
terminal) or decode a batch, then print the intervention diagnostics."""

from __future__ import annotations

import json
import sys
import time

from blendin_ext.cli.args import add_decode_arguments, add_model_arguments, decode_options
from blendin_ext.cli.common import Style, coverage_by_row, fmt, load_pair, map_summary, result_json
from blendin_ext.models.progress import progress_bar


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "generate",
        help="generate text from one or more prompts",
        description="Generates with BlendIn (or a baseline strategy), streaming the text, then "
        "prints intervention diagnostics.",
    )
    parser.add_argument(
        "--prompt",
        action="append",
        required=True,
        help="prompt text (repeat for a batch); the base sees it as is, the guide "
        "inside its chat template",
    )
    add_model_arguments(parser)
    add_decode_arguments(parser, max_new_tokens=64)
    parser.add_argument(
        "--json", action="store_true", help="print the results as JSON (no streaming)"
    )
    parser.set_defaults(func=run, command_parser=parser)
    return parser


def diagnostics_lines(result, tokenizer, style: Style, coverage=None) -> list:
    """The short summary printed after a generated text."""
    diag = result.diagnostics
    lines = [
        f"tokens {diag.tokens} ({result.finish_reason}), interventions {diag.intervention_count} "
        f"(rate {diag.intervention_rate:.2f}), mean alpha {fmt(diag.mean_alpha)}, "
        f"mean agreement {fmt(diag.mean_agree)}"
        + (f", map coverage {fmt(coverage)}" if coverage is not None else "")
        + (
            f", guide twins {fmt(diag.guide_twin_share)}"
            if diag.guide_twin_share is not None
            else ""
        ),
        "won by: " + ", ".join(style(f"{name} {count}", name) for name, count in diag.wins.items()),
    ]
    guide_won = [i for i in diag.interventions if i.winner == "guide"]
    if guide_won:
        shown = ", ".join(f"#{i.position} {tokenizer.decode([i.token])!r}" for i in guide_won[:12])
        more = f" (+{len(guide_won) - 12} more)" if len(guide_won) > 12 else ""
        lines.append(f"guide won at {shown}{more}")
    return lines


def _stream_one(generator, args, style: Style):
    """One prompt, its text written as it comes."""
    for event in generator.stream(args.prompt, options=decode_options(args)):
        winner = event.intervention.winner if event.intervention is not None else None
        sys.stdout.write(style(event.text, winner) if winner else event.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return generator.last_output


def _with_progress(generator, args):
    """A batch with a progress bar over decode steps (on stderr)."""
    with progress_bar(
        not args.quiet,
        total=args.max_new_tokens,
        desc=f"{len(args.prompt)} prompt(s)",
        unit="step",
        leave=False,
    ) as bar:
        for event in generator.stream(args.prompt, options=decode_options(args)):
            if event.position >= bar.n:
                bar.update(event.position + 1 - bar.n)
    return generator.last_output


def run(args) -> int:
    generator, base, guide = load_pair(args)
    style = Style()
    started = time.perf_counter()
    batch = args.json or len(args.prompt) > 1
    output = _with_progress(generator, args) if batch else _stream_one(generator, args, style)
    seconds = time.perf_counter() - started
    coverage = coverage_by_row(output)
    generated = output.stats.generated_tokens
    if args.json:
        print(
            json.dumps(
                {
                    "base": args.base,
                    "guide": args.guide,
                    "load_seconds": {"base": base.load_seconds, "guide": guide.load_seconds},
                    "map": map_summary(generator),
                    "results": [result_json(r, c) for r, c in zip(output.results, coverage)],
                    "stats": output.stats.summary(),
                    "tokens_per_second": generated / seconds,
                },
                indent=2,
            )
        )
        return 0
    for index, (result, cover) in enumerate(zip(output.results, coverage)):
        if len(args.prompt) > 1:
            print(style(f"--- prompt {index + 1}: {result.prompt!r}", "bold"))
            print(result.text)
        for line in diagnostics_lines(result, base.tokenizer, style, cover):
            print(style("[blendin] ", "dim") + line)
    summary = map_summary(generator)
    print(
        style("[blendin] ", "dim") + f"{generated} tokens in {seconds:.1f} s "
        f"({generated / seconds:.1f} tokens/s), guide forwards {output.stats.guide_forwards}"
        + (f"; {summary}" if summary else "")
    )
    return 0
