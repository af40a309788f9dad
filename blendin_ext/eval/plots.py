"""PNG plots of an eval run (matplotlib with the Agg backend: no display)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use(): the backend must be chosen first


def _score_series(kind: str) -> list:
    """(label, key, marker) of the quality measures to plot for this task."""
    if kind == "math":
        return [
            ("accuracy", "accuracy", "o"),
            ("no invented 'Question:'", "no_invented_question", "s"),
        ]
    return [
        ("refusal, safe prompts", "refusal_safe", "o"),
        ("refusal, unsafe prompts", "refusal_unsafe", "s"),
    ]


def _value(line: dict, key: str) -> float:
    if key == "no_invented_question":  # the share of answers that did not run on
        return 1.0 - line["invented_question"]
    return line.get(key, float("nan"))


def plot_score_vs_intervention(lines: list, kind: str, path: Path, title: str) -> Path:
    """One point per strategy (one colour each): quality against the share of
    tokens where the guide stepped in (base-only sits at 0, guide-only at 1)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    series = _score_series(kind)
    for index, line in enumerate(lines):
        colour = colours[index % len(colours)]
        for _, key, marker in series:
            ax.scatter(
                line["intervention_rate"],
                _value(line, key),
                marker=marker,
                s=70,
                color=colour,
                edgecolor="black",
                linewidth=0.5,
                zorder=3,
                alpha=0.85,
            )
        ax.scatter([], [], marker="o", color=colour, label=line["strategy"])
    if len(series) > 1:
        for label, _, marker in series:
            ax.scatter([], [], marker=marker, facecolor="white", edgecolor="black", label=label)
    ax.set_xlabel("intervention rate (share of tokens where the guide stepped in)")
    ax.set_ylabel("rate")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_alpha_distribution(rows: list, strategies: list, path: Path, title: str) -> Path:
    """Histogram of the guide weight alpha at every intervention point for the
    strategies whose alpha varies (BlendIn's "auto"); a fixed-alpha strategy
    is drawn as a dashed line at its constant value."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    bins = [i / 20 for i in range(21)]
    plotted = 0
    for name in strategies:
        alphas = [a for r in rows if r["strategy"] == name for a in r.get("alphas", [])]
        if not alphas:
            continue
        plotted += 1
        if max(alphas) - min(alphas) < 1e-6:
            ax.axvline(
                alphas[0],
                linestyle="--",
                linewidth=1.2,
                color=f"C{plotted}",
                label=f"{name}: fixed {alphas[0]:g} ({len(alphas)} points)",
            )
        else:
            ax.hist(
                alphas,
                bins=bins,
                histtype="stepfilled",
                alpha=0.45,
                color=f"C{plotted}",
                edgecolor="black",
                label=f"{name} ({len(alphas)} points)",
            )
    if plotted:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no interventions", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("alpha (guide weight) at intervention points")
    ax.set_ylabel("count")
    ax.set_xlim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(
    folder: Path, rows: list, lines: list, strategies: list, kind: str, title: str
) -> list:
    """Both plots into ``folder``; returns their paths."""
    folder = Path(folder)
    return [
        plot_score_vs_intervention(lines, kind, folder / "score_vs_intervention.png", title),
        plot_alpha_distribution(rows, strategies, folder / "alpha_at_interventions.png", title),
    ]
