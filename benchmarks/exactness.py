"""What exactness changes: blendin against blendin-top100 (the paper's top-100
procedure) in `blendin eval` results folders.

    blendin eval --task gsm8k --limit 40 --strategies blendin,blendin-top100,nudging \
        --batch-size 1 --out R1
    python benchmarks/exactness.py R1 [R2 ...] [--explain] [--lists blendin-topN] [--json out.json]

Per folder: how many answers the two strategies write token for token
alike; where they part (the first differing token, and how many of the
exact run's interventions came before it); the disagreement per
intervention along the shared prefixes (each answer's interventions up to
where it parts, or all of them); and, side by side for every strategy in
the folder, the eval's own figures (accuracy or refusal, clean endings,
intervention rate).

Which runs compare cleanly: the two strategies must see the same logits
until they part. One answer at a time (`--batch-size 1`) or `--batching
mixed` (both rows of a problem in one batch) guarantee it; by-strategy
batches do not (bf16 arithmetic depends on the batch, so answers may also
part at near ties that the method did not cause).

`--explain` loads the pair the folder names and, at each first difference,
replays the loop on that answer alone (the base one token a forward, the
lazy guide catching up at the answer's interventions) to say why the lists
chose otherwise: mass outside the top N (lists of the whole vocabulary give
blendin's token) or the cross-tokenizer guide (its probabilities not
renormalised over tokens the base can spell). A parting the lone replay
does not reproduce was a near tie that bf16 arithmetic settles either way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

EXACT, LISTS = "blendin", "blendin-top100"  # LISTS: the default of --lists


def rows_of(folder: Path) -> dict:
    rows = [
        json.loads(line)
        for line in (folder / "examples.jsonl").read_text().splitlines()
        if line.strip()
    ]
    return {(r["strategy"], r["id"]): r for r in rows}


def first_difference(a: list, b: list):
    """Index of the first differing token (the shorter length when one is
    a prefix of the other), None when equal."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def compare(folder: Path, lists_name: str = LISTS) -> dict:
    rows = rows_of(folder)
    config = json.loads((folder / "config.json").read_text())
    ids = sorted({i for s, i in rows if s == EXACT} & {i for s, i in rows if s == lists_name})
    parted, shared_interventions, at_intervention = [], 0, 0
    for problem in ids:
        exact, lists = rows[EXACT, problem], rows[lists_name, problem]
        step = first_difference(exact["token_ids"], lists["token_ids"])
        positions = exact["intervention_positions"]
        shared_interventions += (
            sum(p <= step for p in positions) if step is not None else len(positions)
        )
        if step is not None:
            before = sum(p < step for p in positions)
            at_intervention += step in positions
            parted.append(
                {
                    "id": problem,
                    "step": step,
                    "interventions_before": before,
                    "tokens": (len(exact["token_ids"]), len(lists["token_ids"])),
                    "texts": (exact["text"], lists["text"]),
                }
            )
    steps = [p["step"] for p in parted]
    return {
        "folder": str(folder),
        "lists": lists_name,
        "config": config,
        "problems": len(ids),
        "identical": len(ids) - len(parted),
        "parted": parted,
        "first_step_median": statistics.median(steps) if steps else None,
        "first_step_range": (min(steps), max(steps)) if steps else None,
        "parted_at_an_intervention": at_intervention,
        "interventions_in_shared_prefixes": shared_interventions,
        "disagreement_per_intervention": (
            len(parted) / shared_interventions if shared_interventions else None
        ),
        "summary": summary_lines(folder, rows, config["task_kind"]),
    }


def summary_lines(folder: Path, rows: dict, task_kind: str) -> list:
    """The eval's summary of every strategy; for a run stopped before its
    end (no summary.json yet), the same summary of the rows it wrote."""
    written = folder / "summary.json"
    if written.exists():
        return json.loads(written.read_text())["strategies"]
    from blendin_ext.eval.summary import summarize

    names = list(dict.fromkeys(strategy for strategy, _ in rows))
    return summarize(list(rows.values()), names, task_kind)


# ------------------------------------------------------------- --explain
def replay_logits(generator, config: dict, row: dict, step: int):
    """(base, guide) logits before token `step` of an answer, replayed as the
    loop ran it: the base one token a forward, the guide (lazy) catching up
    only at the answer's interventions, so the arithmetic is the run's."""
    import torch

    from blendin_ext.models.prompts import base_prompt_ids

    base, guide = generator.base, generator.guide.for_call()
    guide.guide_sync = config["guide_sync"]
    base.start(base_prompt_ids(generator.tokenizer, [row["prompt"]]), step + 1)
    guide.start([row["prompt"]], step + 1)
    guide_runs = set(row["intervention_positions"])
    with torch.inference_mode():
        for position, token in enumerate(row["token_ids"][:step]):
            base.logits()
            if position in guide_runs or not config["lazy"]:
                guide.logits()
            tokens = torch.tensor([token], device=base.device)
            base.push(tokens)
            guide.push(tokens, [token], [True])
        return base.logits().float(), guide.logits().float(), guide.guide_to_base


def explain(result: dict, lists_name: str) -> None:
    """Recomputes both models' logits at each first difference and says why
    the lists chose otherwise: their top-N cut (lists of the whole
    vocabulary give the exact token), or the cross-tokenizer guide (its
    probabilities not renormalised over tokens the base can spell)."""
    import torch

    from blendin_ext.decode.loop import BlendInGenerator
    from blendin_ext.models.loading import load_model, resolve_dtype
    from blendin_ext.ops.args import StepArgs
    from blendin_ext.ops.fused import run_step
    from blendin_ext.ops.strategies import choose
    from blendin_ext.ops.top_n import top_n_step

    config = result["config"]
    dtype = resolve_dtype(config["dtype"], config["device"], log=False)
    load = dict(
        dtype=dtype,
        progress=False,
        pack_weights=config["pack_weights"],
        linear_kernel=config["linear_kernel"],
    )
    base, guide = load_model(config["base"], **load), load_model(config["guide"], **load)
    generator = BlendInGenerator(
        base.model,
        guide.model,
        base.tokenizer,
        guide.tokenizer,
        system_prompt=config["system_prompt"],
    )
    rows = rows_of(Path(result["folder"]))
    args = StepArgs.build(gamma=config["gamma"], agree_bonus=config["agree_bonus"])
    n = choose(lists_name).top_n
    for part in result["parted"]:
        row, step = rows[EXACT, part["id"]], part["step"]
        b, g, maps = replay_logits(generator, config, row, step)
        with torch.inference_mode():
            exact = run_step(b, g, maps, args)
            lists = top_n_step(b, g, maps, args, n)
            whole = top_n_step(b, g, maps, args, max(b.shape[-1], g.shape[-1]))
        exact_token, lists_token = int(exact.tokens), int(lists.tokens)
        written = (
            (row["token_ids"] + [-1])[step],
            (rows[lists_name, part["id"]]["token_ids"] + [-1])[step],
        )
        reproduced = (exact_token, lists_token) == written
        cause = (
            f"mass outside the top {n}"
            if int(whole.tokens) == exact_token
            else "guide not renormalised over base-spellable tokens"
        )
        p_b = torch.softmax(b[0], -1)
        part.update(
            {
                "reproduced": reproduced,
                # Not reproduced: the run's logits differ from this lone
                # replay's (a batch's shapes and the lazy guide's catch-ups
                # change the bf16 arithmetic) and the choice was a near tie
                # that the replay settles alike for both strategies.
                "cause": cause
                if reproduced
                else "not reproduced alone (a near tie at bf16 precision)",
                "c_b": float(exact.base_top_prob),
                "alpha_exact": float(exact.alpha),
                "alpha_lists": float(lists.alpha),
                "agree_exact": float(exact.agree),
                "agree_lists": float(lists.agree),
                "base_rank_of_exact_token": int((p_b > p_b[exact_token]).sum()) + 1,
                # the lists' rule over whole vocabularies: equal to the lists'
                # token when the cut of the lists did not matter
                "whole_lists_token": generator.tokenizer.decode([int(whole.tokens)]),
                "tokens_at_step": tuple(generator.tokenizer.decode([t]) for t in written),
                "replayed_tokens": tuple(
                    generator.tokenizer.decode([t]) for t in (exact_token, lists_token)
                ),
            }
        )


# ---------------------------------------------------------------- tables
def fmt(value, kind="%") -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if kind == "%" else f"{value:.2f}"


def markdown(result: dict) -> str:
    config = result["config"]
    math_task = config["task_kind"] == "math"
    score = ["accuracy"] if math_task else ["refuse safe", "refuse unsafe"]
    head = [
        "strategy",
        "n",
        *score,
        "clean end",
        "new Question:",
        "tokens",
        "interv. rate",
        "mean alpha",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for s in result["summary"]:
        scores = [s["accuracy"]] if math_task else [s["refusal_safe"], s["refusal_unsafe"]]
        cells = [
            s["strategy"],
            s["n"],
            *map(fmt, scores),
            fmt(s["clean_end"]),
            fmt(s["invented_question"]),
            f"{s['mean_new_tokens']:.0f}",
            fmt(s["intervention_rate"]),
            fmt(s["mean_alpha"], "f"),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    rng = result["first_step_range"]
    lines += [
        "",
        f"- {EXACT} vs {result['lists']}: {result['identical']}/{result['problems']} answers "
        f"token for token alike; {len(result['parted'])} part"
        + (
            f", first at token {result['first_step_median']:g} (median; range {rng[0]}-{rng[1]}), "
            f"{result['parted_at_an_intervention']} of them at an intervention"
            if rng
            else ""
        )
        + f"; {fmt(result['disagreement_per_intervention'])} of the "
        f"{result['interventions_in_shared_prefixes']} interventions in the shared prefixes "
        "chose another token.",
    ]
    for part in result["parted"]:
        why = f", {part['cause']}" if "cause" in part else ""
        detail = (
            (
                f" (c_b {part['c_b']:.2f}, alpha {part['alpha_exact']:.3f} exact vs "
                f"{part['alpha_lists']:.3f} lists, {part['tokens_at_step'][0]!r} vs "
                f"{part['tokens_at_step'][1]!r}, exact token's base rank "
                f"{part['base_rank_of_exact_token']})"
            )
            if "c_b" in part
            else ""
        )
        lines.append(
            f"  - {part['id']}: token {part['step']} after "
            f"{part['interventions_before']} interventions{why}{detail}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", help="blendin eval results folders")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="recompute the logits at each first difference (loads the pair)",
    )
    parser.add_argument(
        "--lists",
        default=LISTS,
        help=f"the list strategy to hold against {EXACT} (default {LISTS}; any blendin-topN)",
    )
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)
    results = [compare(Path(f), args.lists) for f in args.folders]
    for result in results:
        if args.explain and result["parted"]:
            explain(result, args.lists)
        print(f"\n## {result['config']['task']} ({result['folder']})\n\n{markdown(result)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
