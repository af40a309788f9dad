"""The host's side of each step and the results of a call.

After every step the loop hands the step's host values (`HostStep`) here:
`record_step` checks each live row, records its diagnostics, grows its
text, applies EOS, stop strings and the step hook, and yields a
`TokenEvent` per row; `finish_run` turns the run into its
`GenerationOutput` once the last step is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional

from blendin_ext.decode.batch import DecodeRun, HostStep, save_guide_stats
from blendin_ext.decode.diagnostics import LoopStats, SequenceDiagnostics, TokenEvent


@dataclass
class GenerationResult:
    prompt: str
    text: str  # generated text, without the stop token / stop string
    token_ids: List[int]  # generated base ids, a final EOS included
    finish_reason: str  # "eos", "stop" (a stop string) or "length"
    diagnostics: SequenceDiagnostics
    # Cross-tokenizer guide: mean share of its probability on tokens with a
    # base twin, over the guide runs while the row was live (else None).
    map_coverage: Optional[float] = None


@dataclass
class GenerationOutput:
    results: List[GenerationResult]
    stats: LoopStats

    def __getitem__(self, i) -> GenerationResult:
        return self.results[i]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self):
        return iter(self.results)

    @property
    def texts(self) -> List[str]:
        return [r.text for r in self.results]


def step_hook_verdict(run: DecodeRun, host: HostStep) -> Optional[List[bool]]:
    """The step hook's verdict per batch position; the hook itself sees
    every prompt (finished ones not live), whatever the batch holds."""
    if run.step_hook is None:
        return None
    tokens = [0] * len(run.prompts)
    for pos, row in enumerate(run.rows):
        tokens[row] = host.tokens[pos]
    live = [reason is None for reason in run.finish]
    hooked = run.step_hook(tokens, live)
    return None if hooked is None else [bool(hooked[row]) for row in run.rows]


def record_step(
    run: DecodeRun, host: HostStep, hooked: Optional[List[bool]] = None
) -> Iterator[TokenEvent]:
    """Per live row: bad-row check, diagnostics, text, stop conditions
    (`hooked`: rows the step hook stopped)."""
    for pos, alive in enumerate(run.live):
        if not alive:
            continue
        row, token = run.rows[pos], host.tokens[pos]
        if token < 0:
            raise ValueError(
                f"prompt {row}: the models' logits held NaN/+inf or were fully masked at "
                f"generated position {run.diagnostics[row].tokens}"
            )
        diag = run.diagnostics[row]
        event = diag.record(
            token,
            host.base_confidence[pos],
            host.intervened[pos],
            host.alpha[pos],
            host.agree[pos],
            host.base_top[pos],
            host.guide_top[pos],
        )
        text = run.texts[row]
        if run.needs_text:
            delta, stopped = text.add(token)
        else:
            text.ids.append(token)
            delta, stopped = "", False
        stopped = stopped or bool(hooked and hooked[pos])
        reason = (
            "eos"
            if token in run.stop_ids
            else "stop"
            if stopped
            else "length"
            if diag.tokens >= run.max_new_tokens
            else None
        )
        if reason is not None:
            run.live[pos], run.finish[row] = False, reason
            if run.needs_text:
                delta += text.flush()
        run.stats.generated_tokens += 1
        yield TokenEvent(row, diag.tokens - 1, token, delta, event, reason is not None)


def finish_run(run: DecodeRun, tokenizer) -> GenerationOutput:
    """The call's results: texts (stop strings cut), finish reasons,
    diagnostics, the guide's statistics and the loop's counters."""
    save_guide_stats(run, range(len(run.rows)))
    results = []
    for row, prompt in enumerate(run.prompts):
        ids = run.texts[row].ids
        reason = run.finish[row] or "length"
        kept = ids[:-1] if reason == "eos" else ids
        text = tokenizer.decode(kept, skip_special_tokens=True)
        cuts = [i for i in (text.find(s) for s in run.stop_strings) if i >= 0]
        if cuts:
            text = text[: min(cuts)]
        results.append(
            GenerationResult(
                prompt=prompt,
                text=text,
                token_ids=list(ids),
                finish_reason=reason,
                diagnostics=run.diagnostics[row],
                map_coverage=run.coverage[row],
            )
        )
    stats = run.stats
    stats.base_forwards, stats.base_tokens = run.base.forwards, run.base.tokens_fed
    stats.guide_forwards, stats.guide_tokens = run.guide.forwards, run.guide.tokens_fed
    stats.forward_seconds = run.base.forward_seconds + run.guide.forward_seconds
    return GenerationOutput(results, stats)
