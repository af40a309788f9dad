"""The real generator behind `blendin eval`: a `BlendInGenerator` over two
loaded models (the command line builds it), wrapped for the runner.

One batch of eval requests becomes one `BlendInGenerator.generate` call with
per-row gamma / alpha (so a batch may mix strategies) and per-row seeds
derived from the problem id, so a row's tokens depend neither on its batch
nor on whether the run was resumed.
"""

from __future__ import annotations

import zlib

from blendin_ext.decode.options import DecodeOptions
from blendin_ext.eval.runner import Generation


def row_seed(seed: int, example_id: str) -> int:
    """A seed for one problem that is stable across batches and reruns."""
    return seed + zlib.crc32(example_id.encode("utf-8"))


class EvalGenerator:
    """Callable `requests -> list[Generation]` over a BlendInGenerator.
    options: the run's DecodeOptions; each batch replaces gamma and alpha
    (its rows' strategies) and the seed (`row_seed` of options.seed)."""

    def __init__(self, blend, options: DecodeOptions):
        self.blend = blend
        self.options = options
        self.stop = options.stop_strings

    def __call__(self, requests: list) -> list:
        output = self.blend.generate(
            [r.prompt for r in requests],
            options=self.options,
            strategy=[r.strategy.name for r in requests],  # resolves to the same gamma / alpha
            gamma=[r.strategy.gamma for r in requests],
            alpha=[r.strategy.alpha for r in requests],
            seed=[row_seed(self.options.seed, r.example.id) for r in requests],
        )
        coverage = [res.map_coverage for res in output.results]
        # The batch's decode steps and guide forwards serve all its rows; they
        # are shared out by tokens (the guide's only among rows whose strategy
        # can use it, so base-only rows of a mixed batch get none). Summed per
        # strategy they give guide forwards per decode step.
        tokens = [len(res.token_ids) for res in output.results]
        guided = [r.strategy.gamma > 0 for r in requests]
        all_tokens = sum(tokens) or 1
        guided_tokens = sum(t for t, g in zip(tokens, guided) if g) or 1
        stats = output.stats
        return [
            self._convert(
                res,
                stats.guide_forwards * t / guided_tokens if g else 0.0,
                stats.steps * t / all_tokens,
                cover,
            )
            for res, t, g, cover in zip(output.results, tokens, guided, coverage)
        ]

    def _convert(self, result, guide_forwards: float, decode_steps: float, coverage) -> Generation:
        diag = result.diagnostics
        text = result.text
        if result.finish_reason == "stop" and len(self.stop) == 1:
            # The loop cuts the stop string from the text; put it back so the
            # saved text shows what the model wrote and scoring sees it.
            text += self.stop[0]
        wins = diag.wins
        return Generation(
            text=text,
            new_tokens=len(result.token_ids),
            token_ids=list(result.token_ids),
            finish_reason=result.finish_reason,
            interventions=diag.intervention_count,
            mean_alpha=diag.mean_alpha if diag.mean_alpha is not None else float("nan"),
            mean_agree=diag.mean_agree if diag.mean_agree is not None else float("nan"),
            alphas=[i.alpha for i in diag.interventions],
            intervention_positions=[i.position for i in diag.interventions],
            guide_wins=wins.get("guide", 0),
            guide_forwards=guide_forwards,
            decode_steps=decode_steps,
            map_coverage=coverage,
            guide_twin_share=diag.guide_twin_share,
        )
