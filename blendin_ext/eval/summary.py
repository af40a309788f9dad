"""From per-example rows to one line per strategy, a printed table, and a
diagnostics paragraph in words (the paper's advice: a high intervention rate
with little agreement between the two models marks a pair whose guidance
should not be trusted)."""

from __future__ import annotations

import csv
import io
import math
from statistics import mean

# Diagnostics thresholds. The paper reads a high intervention rate as the
# sign of a poorly matched pair: pairs whose guide steps in at more than
# about 20% of tokens tend to fail, so 20% is "high" and the 10-20% below it
# a range to watch rather than "light" guidance. "agree" is the base's own
# probability of the guide's choice (at most gamma at an intervention), so
# below 0.05 the base finds the guide's tokens implausible.
LIGHT_INTERVENTION_RATE = 0.1
HIGH_INTERVENTION_RATE = 0.2
VERY_HIGH_INTERVENTION_RATE = 0.6
LOW_AGREEMENT = 0.05
HIGH_INVENTED_QUESTION = 0.3


def _mean(values, default=float("nan")):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return mean(values) if values else default


def _rate(flags) -> float:
    flags = list(flags)
    return sum(bool(f) for f in flags) / len(flags) if flags else float("nan")


def _per_intervention(rows, key: str) -> float:
    """Mean of a per-row mean over intervention points, weighted by each
    row's number of interventions (= the mean over all intervention points)."""
    pairs = [
        (r[key], r["interventions"])
        for r in rows
        if r["interventions"] and r.get(key) is not None and not math.isnan(r[key])
    ]
    total = sum(count for _, count in pairs)
    return sum(value * count for value, count in pairs) / total if total else float("nan")


def _guide_forwards_per_step(rows) -> float:
    """Guide forward passes per decode step of the batches (1 in eager mode;
    in lazy mode the share of steps where some row needed the guide)."""
    steps = sum(r.get("decode_steps", 0.0) for r in rows)
    return sum(r["guide_forwards"] for r in rows) / steps if steps else float("nan")


def summarize_strategy(name: str, rows: list, kind: str) -> dict:
    """One summary line for one strategy's rows."""
    tokens = sum(r["new_tokens"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    line = {"strategy": name, "n": len(rows)}
    if kind == "math":
        line["accuracy"] = _rate(r["correct"] for r in rows)
    else:
        line["refusal_safe"] = _rate(r["refused"] for r in rows if r["reference"] == "safe")
        line["refusal_unsafe"] = _rate(r["refused"] for r in rows if r["reference"] == "unsafe")
    line.update(
        {
            "clean_end": _rate(r["ending"] == "clean" for r in rows),
            "invented_question": _rate(r["ending"] == "invented_question" for r in rows),
            "hit_max_tokens": _rate(r["ending"] == "length" for r in rows),
            "mean_new_tokens": _mean(r["new_tokens"] for r in rows),
            "mean_answer_words": _mean(r["answer_words"] for r in rows),
            "intervention_rate": (sum(r["interventions"] for r in rows) / tokens)
            if tokens
            else float("nan"),
            "mean_alpha": _per_intervention(rows, "mean_alpha"),
            "agreement": _per_intervention(rows, "mean_agree"),
            "tokens_per_s": tokens / seconds if seconds > 0 else float("nan"),
            "guide_forwards_per_step": _guide_forwards_per_step(rows),
        }
    )
    coverage = [r["map_coverage"] for r in rows if r.get("map_coverage") is not None]
    if coverage:
        line["map_coverage"] = mean(coverage)
    shares = [r["guide_twin_share"] for r in rows if r.get("guide_twin_share") is not None]
    if shares and any(r["interventions"] for r in rows):
        line["guide_twin_share"] = mean(shares)
    return line


def summarize(rows: list, strategies: list, kind: str) -> list:
    """Summary lines in the order the strategies were asked for."""
    lines = []
    for name in strategies:
        mine = [r for r in rows if r["strategy"] == name]
        if mine:
            lines.append(summarize_strategy(name, mine, kind))
    return lines


# Column headers for the printed table: (key, header, format).
_COLUMNS = (
    ("strategy", "strategy", "{}"),
    ("n", "n", "{}"),
    ("accuracy", "accuracy", "{:.1%}"),
    ("refusal_safe", "refuse safe", "{:.1%}"),
    ("refusal_unsafe", "refuse unsafe", "{:.1%}"),
    ("clean_end", "clean end", "{:.0%}"),
    ("invented_question", "new Question:", "{:.0%}"),
    ("mean_new_tokens", "tokens", "{:.0f}"),
    ("intervention_rate", "interv. rate", "{:.1%}"),
    ("mean_alpha", "mean alpha", "{:.2f}"),
    ("agreement", "agree", "{:.3f}"),
    ("tokens_per_s", "tok/s", "{:.1f}"),
    ("guide_forwards_per_step", "guide fwd/step", "{:.2f}"),
    ("map_coverage", "map cover", "{:.1%}"),
    ("guide_twin_share", "twin share", "{:.1%}"),
)


def _cell(value, fmt: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return fmt.format(value)


def format_table(lines: list, markdown: bool = False) -> str:
    """The summary as an aligned text table (or a Markdown table)."""
    columns = [c for c in _COLUMNS if any(c[0] in line for line in lines)]
    header = [c[1] for c in columns]
    body = [[_cell(line.get(key, float("nan")), fmt) for key, _, fmt in columns] for line in lines]
    if markdown:
        rule = ["---"] * len(header)
        return "\n".join("| " + " | ".join(r) + " |" for r in [header, rule] + body) + "\n"
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    return (
        "\n".join(
            "  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header] + body
        )
        + "\n"
    )


def to_csv(lines: list) -> str:
    keys = [c[0] for c in _COLUMNS if any(c[0] in line for line in lines)]
    keys += [k for line in lines for k in line if k not in keys]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(keys)))
    writer.writeheader()
    writer.writerows(lines)
    return buffer.getvalue()


def _noise_margin(n: int) -> float:
    """Half-width of a 95% interval for a rate near 50% measured on n items:
    differences smaller than this are within noise."""
    return 1.96 * math.sqrt(0.25 / n) if n else float("nan")


def diagnose(lines: list, kind: str) -> str:
    """The summary in words: which strategies got guidance they can trust."""
    by_name = {line["strategy"]: line for line in lines}
    notes = []
    for line in lines:
        notes += _guidance_notes(line)
    score = "accuracy" if kind == "math" else "refusal_unsafe"
    notes += _comparison_notes(by_name, score)
    base = by_name.get("base")
    if base and base["invented_question"] >= HIGH_INVENTED_QUESTION:
        helped = [
            n
            for n, line in by_name.items()
            if n != "base" and line["invented_question"] < base["invented_question"]
        ]
        note = (
            f"The base alone writes a new 'Question:' after {base['invented_question']:.0%} of its answers "
            "(it is a pretrained model continuing a document)."
        )
        if helped:
            note += f" Guidance lowers that with: {', '.join(helped)}."
        notes.append(note)
    if lines:
        notes.append(
            f"With {lines[0]['n']} problems per strategy, differences in {score.replace('_', ' ')} "
            f"below about {_noise_margin(lines[0]['n']):.0%} are within noise."
        )
    return "\n".join(f"- {note}" for note in notes) + "\n" if notes else "- nothing to report\n"


def _guidance_notes(line: dict) -> list:
    name, rate, agree = line["strategy"], line["intervention_rate"], line["agreement"]
    if math.isnan(rate) or rate == 0 or name in ("base", "guide"):
        return []
    notes = []
    if rate >= HIGH_INTERVENTION_RATE and not math.isnan(agree) and agree < LOW_AGREEMENT:
        notes.append(
            f"{name}: guidance looks UNRELIABLE for this pair: the base is unsure at {rate:.0%} "
            f"of tokens and gives the guide's choice only {agree:.3f} probability on average; "
            "the two models disagree where guidance is used, so check outputs before trusting them."
        )
    elif rate >= VERY_HIGH_INTERVENTION_RATE:
        notes.append(
            f"{name}: the guide steps in at {rate:.0%} of tokens, so the text is mostly the "
            "guide's; the pair looks poorly matched (the base rarely knows what comes next)."
        )
    elif rate >= HIGH_INTERVENTION_RATE:
        notes.append(
            f"{name}: high intervention rate ({rate:.0%}): the paper finds that pairs above "
            "about 20% tend to fail. The base gives the guide's choices "
            f"{agree:.3f} probability on average, so the models are not at odds there, "
            "but compare the outputs with the base's before relying on this pair."
        )
    elif rate >= LIGHT_INTERVENTION_RATE:
        notes.append(
            f"{name}: the guide steps in at {rate:.0%} of tokens (agree {agree:.3f}): "
            "moderate guidance, below but near the ~20% above which the paper's pairs "
            "tend to fail; watch this rate on other prompts."
        )
    else:
        notes.append(
            f"{name}: the guide steps in at {rate:.0%} of tokens (agree {agree:.3f}): "
            "light, targeted guidance, as intended."
        )
    coverage = line.get("map_coverage")
    if coverage is not None and coverage < 0.9:
        notes.append(
            f"{name}: only {coverage:.0%} of the guide's probability falls on tokens the base "
            "vocabulary shares; cross-tokenizer guidance loses the rest."
        )
    return notes


def _comparison_notes(by_name: dict, score: str) -> list:
    notes = []
    base, guide, blendin, nudge = (by_name.get(k) for k in ("base", "guide", "blendin", "nudging"))
    label = score.replace("_", " ")
    if base and guide and score in base and not math.isnan(base[score]):
        notes.append(
            f"{label.capitalize()}: guide alone {guide[score]:.1%}, base alone {base[score]:.1%}."
        )
    if blendin and nudge and score in blendin and not math.isnan(blendin[score]):
        diff = blendin[score] - nudge[score]
        notes.append(
            f"BlendIn vs nudging (hard switching) on {label}: {blendin[score]:.1%} vs "
            f"{nudge[score]:.1%} ({diff:+.1%})."
        )
    return notes
