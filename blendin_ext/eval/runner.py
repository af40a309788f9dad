"""Runs every strategy on the same problems, scores each answer, appends
rows to the results folder batch by batch (so a rerun resumes), and writes
the summary, the diagnostics and the plots.

The runner is independent of how text is produced: it calls a *generator*,
``generator(requests) -> list[Generation]``, for one batch of requests.
``backend.py`` wraps the real one (a `BlendInGenerator`); tests can pass
any callable with the same contract.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from blendin_ext.eval import scoring, summary
from blendin_ext.eval.results import ResultsFolder
from blendin_ext.eval.tasks import Example, Task, base_prompt
from blendin_ext.models.progress import progress_bar
from blendin_ext.ops.strategies import StrategyChoice


@dataclass(frozen=True)
class Request:
    """One row of a batch: a problem, a strategy and the prompt."""

    example: Example
    strategy: StrategyChoice
    prompt: str


@dataclass
class Generation:
    """What the generator returns for one request."""

    text: str
    new_tokens: int
    finish_reason: str  # "eos", "stop" or "length"
    interventions: int = 0
    mean_alpha: float = float("nan")  # over intervention points
    mean_agree: float = float("nan")  # over intervention points
    alphas: list = field(default_factory=list)  # alpha at each intervention point
    guide_wins: int = 0  # interventions where the guide's token was chosen
    guide_forwards: float = 0.0  # this row's share of its batch's guide forward passes
    decode_steps: float = 0.0  # this row's share of its batch's decode steps
    map_coverage: Optional[float] = None
    guide_twin_share: Optional[float] = None  # guide ids fed as twins (cross-tokenizer)
    token_ids: list = field(default_factory=list)  # generated base ids (where strategies diverge)
    intervention_positions: list = field(default_factory=list)  # token index of each intervention


Generator = Callable[[list], list]


@dataclass
class EvalSettings:
    strategies: list
    prompt_style: str = "zero-shot"
    batch_size: int = 8
    batching: str = "by-strategy"  # or "mixed": strategies side by side in one batch
    progress: bool = True
    plots: bool = True


def plan_batches(task: Task, settings: EvalSettings, done: set) -> list:
    """The requests still to run, grouped into batches. ``by-strategy`` keeps
    a strategy's rows together (clean tokens/s and guide-forward counts per
    strategy); ``mixed`` puts all strategies of a problem side by side, so one
    batch exercises per-row strategies on identical prompts."""

    def request(example, strategy):
        return Request(example, strategy, base_prompt(example, settings.prompt_style))

    if settings.batching == "mixed":
        pending = [
            request(e, s)
            for e in task.examples
            for s in settings.strategies
            if (s.name, e.id) not in done
        ]
        return [
            pending[i : i + settings.batch_size]
            for i in range(0, len(pending), settings.batch_size)
        ]
    batches = []
    for strategy in settings.strategies:
        pending = [request(e, strategy) for e in task.examples if (strategy.name, e.id) not in done]
        batches += [
            pending[i : i + settings.batch_size]
            for i in range(0, len(pending), settings.batch_size)
        ]
    return batches


def score_row(task: Task, request: Request, generation: Generation, seconds: float) -> dict:
    """The JSONL row of one answer: prompt, text, score and guidance signals."""
    example, text = request.example, generation.text
    row = {
        "id": example.id,
        "strategy": request.strategy.name,
        "question": example.question,
        "prompt": request.prompt,
        "reference": example.reference,
        "text": text,
        "finish_reason": generation.finish_reason,
        "new_tokens": generation.new_tokens,
        "seconds": seconds,
    }
    row.update(scoring.score_answer(task.kind, text, example.reference, generation.finish_reason))
    row.update(example.meta)
    stats = asdict(generation)
    for key in ("text", "new_tokens", "finish_reason"):
        stats.pop(key)
    stats["alphas"] = [round(a, 4) for a in stats["alphas"]]
    row.update(stats)
    row["intervention_rate"] = (
        generation.interventions / generation.new_tokens if generation.new_tokens else 0.0
    )
    return row


def _run_batch(task: Task, batch: list, generator: Generator) -> list:
    start = time.perf_counter()
    generations = generator(batch)
    elapsed = time.perf_counter() - start
    if len(generations) != len(batch):
        raise RuntimeError(
            f"generator returned {len(generations)} results for {len(batch)} requests"
        )
    total = sum(g.new_tokens for g in generations)
    # Each row gets its share of the batch's wall time by the tokens it made,
    # so that summed per strategy they give that strategy's tokens/s.
    shares = [(g.new_tokens / total) if total else 1.0 / len(batch) for g in generations]
    return [score_row(task, r, g, elapsed * s) for r, g, s in zip(batch, generations, shares)]


def run_eval(
    task: Task,
    generator: Generator,
    settings: EvalSettings,
    folder: ResultsFolder,
    title: str = "",
    log=print,
) -> dict:
    """Runs what is missing, then summarises everything in the folder that
    belongs to this task and these strategies. Returns the summary dict."""
    done = folder.done_keys()
    batches = plan_batches(task, settings, done)
    wanted = {(s.name, e.id) for s in settings.strategies for e in task.examples}
    already = len(wanted & done)
    if already:
        log(f"resuming: {already} of {len(wanted)} answers already in {folder.examples_path}")
    with progress_bar(
        settings.progress,
        total=len(wanted),
        initial=already,
        desc="eval",
        unit="answer",
        dynamic_ncols=True,
    ) as bar:
        for batch in batches:
            bar.set_postfix_str(",".join(sorted({r.strategy.name for r in batch})), refresh=False)
            folder.append(_run_batch(task, batch, generator))
            bar.update(len(batch))
    return finish(task, settings, folder, title, log)


def _rescored(folder: ResultsFolder, kind: str) -> list:
    """The folder's rows scored by the current rules (saved again if a rule
    changed since they were written)."""
    rows = folder.rows()
    fresh = [
        dict(r, **scoring.score_answer(kind, r["text"], r["reference"], r["finish_reason"]))
        for r in rows
    ]
    if fresh != rows:
        folder.replace_rows(fresh)
    return fresh


def finish(
    task: Task, settings: EvalSettings, folder: ResultsFolder, title: str, log=print
) -> dict:
    """Summary table, diagnostics and plots from the rows in the folder."""
    names = [s.name for s in settings.strategies]
    ids = {e.id for e in task.examples}
    rows = [r for r in _rescored(folder, task.kind) if r["id"] in ids and r["strategy"] in names]
    lines = summary.summarize(rows, names, task.kind)
    table = summary.format_table(lines)
    words = summary.diagnose(lines, task.kind)
    folder.write_text("summary.csv", summary.to_csv(lines))
    folder.write_text("summary.md", summary.format_table(lines, markdown=True))
    folder.write_text("diagnostics.txt", words)
    result = {
        "task": task.name,
        "kind": task.kind,
        "title": title,
        "strategies": lines,
        "diagnostics": words.splitlines(),
    }
    if settings.plots and lines:  # the caller checked that matplotlib is there
        from blendin_ext.eval import plots

        result["plots"] = [
            str(p) for p in plots.write_plots(folder.path, rows, lines, names, task.kind, title)
        ]
    folder.write_json("summary.json", result)
    log(f"\n{title}\n{table}\nDiagnostics:\n{words}")
    log(f"results in {folder.path}")
    return result
