"""`blendin eval` end to end on tiny random models saved as model folders:
the files it writes, the summary, and resuming."""

import json

import pytest

from blendin_ext import cli
from blendin_ext.cli import eval as eval_command
from blendin_ext.testing import tiny_llama, tiny_tokenizer

STRATEGIES = "base,nudge,blendin"
RESOLVED = ["base", "nudging", "blendin"]  # results name the table's name, not the alias
PROBLEMS = 4


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    """Two tiny random models sharing a word-level tokenizer, saved the way
    a user's local models would be (so `--base FOLDER` goes through the loader)."""
    root = tmp_path_factory.mktemp("models")
    folders = {}
    for name, seed in (("base", 1), ("guide", 2)):
        folder = root / name
        tiny_llama(200, seed=seed).save_pretrained(folder)
        tiny_tokenizer(200).save_pretrained(folder)
        folders[name] = str(folder)
    return folders


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "tiny.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question": f"w{i} w{i + 3} w7", "answer": f"#### {i}"}) + "\n"
            for i in range(PROBLEMS + 2)
        )
    )
    return str(path)


def _argv(folders, task, out, *extra):
    return [
        "eval",
        "--base",
        folders["base"],
        "--guide",
        folders["guide"],
        "--task",
        task,
        "--strategies",
        STRATEGIES,
        "--limit",
        str(PROBLEMS),
        "--max-new-tokens",
        "6",
        "--batch-size",
        "3",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def _rows(out):
    return [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]


def test_eval_writes_results_and_resumes(model_folders, task_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert cli.main(_argv(model_folders, task_file, out)) == 0
    printed = capsys.readouterr().out
    assert "Diagnostics:" in printed and "blendin" in printed

    for name in (
        "config.json",
        "examples.jsonl",
        "summary.csv",
        "summary.json",
        "summary.md",
        "diagnostics.txt",
        "score_vs_intervention.png",
        "alpha_at_interventions.png",
    ):
        assert (out / name).stat().st_size > 0, name
    rows = _rows(out)
    assert len(rows) == PROBLEMS * 3
    assert {(r["strategy"], r["id"]) for r in rows} == {
        (s, f"tiny-{i}") for s in RESOLVED for i in range(1, PROBLEMS + 1)
    }
    for row in rows:
        assert 1 <= row["new_tokens"] <= 6 and row["prompt"].startswith("Question: ")
        assert row["ending"] in ("clean", "invented_question", "length")
        assert 0.0 <= row["intervention_rate"] <= 1.0 and len(row["alphas"]) == row["interventions"]
        if row["strategy"] == "base":
            assert row["interventions"] == 0 and row["guide_forwards"] == 0
    summary = json.loads((out / "summary.json").read_text())
    lines = {line["strategy"]: line for line in summary["strategies"]}
    assert list(lines) == RESOLVED
    assert all(line["n"] == PROBLEMS and 0 <= line["accuracy"] <= 1 for line in lines.values())
    assert lines["base"]["intervention_rate"] == 0 and lines["base"]["guide_forwards_per_step"] == 0
    assert 0 < lines["blendin"]["guide_forwards_per_step"] <= 1  # lazy: only steps that need it
    assert (out / "summary.csv").read_text().startswith("strategy,n,accuracy")

    # A finished run resumes without loading any model, and re-scores saved
    # rows from their text (a row scored by an older rule is corrected).
    monkeypatch.setattr(eval_command, "build_generator", _no_models)
    stale = [dict(rows[0], predicted=12345.0, correct=not rows[0]["correct"])] + rows[1:]
    (out / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stale))
    assert cli.main(_argv(model_folders, task_file, out)) == 0
    assert _rows(out) == rows
    monkeypatch.undo()

    # A killed run (last rows lost, a torn line) is completed with the same answers.
    lines_kept = (out / "examples.jsonl").read_text().splitlines(keepends=True)[:-4]
    (out / "examples.jsonl").write_text("".join(lines_kept) + '{"id": "tiny-4", "stra')
    assert cli.main(_argv(model_folders, task_file, out)) == 0
    resumed = _rows(out)
    assert len(resumed) == len(rows)
    key = lambda r: (r["strategy"], r["id"])  # noqa: E731
    texts = {key(r): r["text"] for r in rows}
    assert all(texts[key(r)] == r["text"] for r in resumed)

    # Adding a strategy runs only its rows; changing a setting is refused.
    more = _argv(model_folders, task_file, out)
    more[more.index("--strategies") + 1] = STRATEGIES + ",blend-0.5"
    assert cli.main(more) == 0
    assert len(_rows(out)) == PROBLEMS * 4
    assert cli.main(_argv(model_folders, task_file, out, "--gamma", "0.3")) == 1
    assert "gamma" in capsys.readouterr().err


def test_mixed_batches_give_the_same_answers(model_folders, task_file, tmp_path):
    """Strategies side by side in one batch (per-row gamma/alpha) produce the
    same text as one strategy per batch."""
    by_strategy, mixed = tmp_path / "by", tmp_path / "mixed"
    assert cli.main(_argv(model_folders, task_file, by_strategy, "--no-plots")) == 0
    assert (
        cli.main(_argv(model_folders, task_file, mixed, "--no-plots", "--batching", "mixed")) == 0
    )
    texts = {(r["strategy"], r["id"]): r["text"] for r in _rows(by_strategy)}
    assert {(r["strategy"], r["id"]): r["text"] for r in _rows(mixed)} == texts


def test_xstest_reports_refusal_on_safe_and_unsafe(model_folders, tmp_path):
    out = tmp_path / "xs"
    argv = _argv(
        model_folders, "xstest", out, "--limit", "2", "--strategies", "base,blendin", "--no-plots"
    )
    assert cli.main(argv) == 0
    lines = json.loads((out / "summary.json").read_text())["strategies"]
    assert all("refusal_safe" in line and "refusal_unsafe" in line for line in lines)
    assert {r["reference"] for r in _rows(out)} == {"safe", "unsafe"}


@pytest.mark.parametrize(
    "flag, value, message, status",
    [
        ("--limit", "0", "--limit", 2),
        ("--max-new-tokens", "0", "--max-new-tokens", 2),
        ("--strategies", "base,greedy", "--strategies", 2),
        ("--top-p", "1.5", "--top-p", 2),
        ("--task", "nope", "--task", 1),  # found out by loading the task, still before any model
    ],
)
def test_bad_arguments_name_the_option(
    model_folders, task_file, tmp_path, capsys, monkeypatch, flag, value, message, status
):
    monkeypatch.setattr(eval_command, "build_generator", _no_models)
    argv = _argv(model_folders, task_file, tmp_path / "bad")
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    assert exit_status(argv) == status
    assert message in capsys.readouterr().err


def exit_status(argv) -> int:
    """cli.main's status, whether argparse exits or main returns."""
    try:
        return cli.main(argv)
    except SystemExit as stop:
        return stop.code


def _no_models(args):
    raise AssertionError("a finished run must not load models again")


def test_blendin_command_line_registers_eval():
    args = cli.build_parser().parse_args(["eval", "--task", "xstest", "--limit", "3"])
    assert args.func is eval_command.run and args.limit == 3
    assert args.strategies == eval_command.DEFAULT_STRATEGIES
