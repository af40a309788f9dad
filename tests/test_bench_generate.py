"""benchmarks/bench_generate.py as gpu_check.sh runs it (a list of batch
sizes, a B=1 profile), here on the CPU with tiny models, so that the GPU
session meets no broken option."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("transformers")


def test_batches_side_by_side_and_profile(tmp_path):
    out, profile = tmp_path / "generate.json", tmp_path / "profile"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_generate.py"),
            "--quick",
            "--batch",
            "1,2",
            "--vocab",
            "600",
            "--base-size",
            "1x64",
            "--guide-size",
            "1x64",
            "--new-tokens",
            "4",
            "--threads",
            "1",
            "--profile",
            str(profile),
            "--profile-tokens",
            "3",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    rows = {(r["name"], r["batch"]) for r in report["rows"]}
    names = ("hf_generate", "loop_base", "blendin_eager", "blendin_lazy")
    assert rows == {(name, batch) for name in names for batch in (1, 2)}
    assert [p["name"] for p in report["profile"]] == ["hf_generate", "loop_base", "blendin_lazy"]
    for run in report["profile"]:
        assert run["tokens"] == 3 and run["totals"]["aten_copies"] > 0
        with gzip.open(profile / f"profile_{run['name']}.trace.json.gz") as f:
            assert json.load(f)["traceEvents"]
        assert "top ops by self CPU time" in (profile / f"profile_{run['name']}.txt").read_text()
    assert json.loads((profile / "profile_summary.json").read_text()) == report["profile"]
