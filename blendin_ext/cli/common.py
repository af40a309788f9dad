"""Pieces the subcommands share: loading the pair, terminal styling, and
the JSON / table forms of a result."""

from __future__ import annotations

import math
import sys
from typing import Optional

from blendin_ext.cli.extras import require_models


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


def load_pair(args):
    """(generator, base LoadedModel, guide LoadedModel) from --base/--guide,
    after checking that everything loading them needs is installed."""
    require_models([args.base, args.guide], f"blendin {args.command}")
    import torch

    from blendin_ext.decode.loop import BlendInGenerator
    from blendin_ext.models.loading import load_model, resolve_dtype

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = resolve_dtype(args.dtype, args.device, log=not args.quiet)
    load = dict(
        dtype=dtype,
        device=args.device,
        progress=not args.quiet,
        pack_weights=args.pack_weights,
        linear_kernel=args.linear_kernel,
    )
    base, guide = load_model(args.base, **load), load_model(args.guide, **load)
    generator = BlendInGenerator(
        base.model,
        guide.model,
        base.tokenizer,
        guide.tokenizer,
        system_prompt=args.system_prompt,
        compile=args.compile,
    )
    return generator, base, guide


def map_summary(generator) -> Optional[str]:
    """The guide->base map in one line (None for a guide of the base's vocabulary)."""
    report = generator.guide.map_report
    return report.summary() if report is not None else None


def coverage_by_row(output) -> list:
    """Mapped guide mass per row of an output (None for a shared vocabulary)."""
    return [result.map_coverage for result in output]


def result_json(result, coverage=None) -> dict:
    return {
        "prompt": result.prompt,
        "text": result.text,
        "finish_reason": result.finish_reason,
        "diagnostics": result.diagnostics.summary(),
        "map_coverage": coverage,
    }
