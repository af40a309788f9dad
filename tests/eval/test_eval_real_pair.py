"""(slow) `blendin eval --task gsm8k --limit 2` on the real default pair, as
a new user runs it after the README's install: the packaged data, the
extras checked first, a results folder at the end."""

import json

import pytest

from blendin_ext import cli
from blendin_ext.cli.args import DEFAULT_BASE, DEFAULT_GUIDE
from blendin_ext.models import builtins


@pytest.mark.slow
def test_gsm8k_two_problems_on_the_default_pair(tmp_path, capsys):
    for name in (DEFAULT_BASE, DEFAULT_GUIDE):
        try:
            builtins.builtin_chunks(builtins.BUILTIN_MODELS[name])
        except builtins.MissingModelPackage as missing:
            pytest.skip(f"demo model packages not installed: {missing.install}")
    out = tmp_path / "eval"
    status = cli.main(
        [
            "eval",
            "--task",
            "gsm8k",
            "--limit",
            "2",
            "--max-new-tokens",
            "24",
            "--strategies",
            "base,nudge,blendin",
            "--out",
            str(out),
            "--quiet",
            "--json",
        ]
    )
    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    assert [line["strategy"] for line in summary["strategies"]] == ["base", "nudging", "blendin"]
    assert all(line["n"] == 2 for line in summary["strategies"])
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows} == {"gsm8k-0", "gsm8k-1"} and len(rows) == 6
