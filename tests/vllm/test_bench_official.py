"""benchmarks/bench_official.py from its one command, on tiny saved models:
three vLLM servers (base, guide, base with the plug-in), the paper's
per-token protocol, our plug-in and our loop side by side, the tables and
the JSON. The figures of a tiny pair mean nothing; the run must finish and
count what the README's table reports."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from tests.helpers.tiny_folders import save_tiny

ROOT = Path(__file__).resolve().parents[2]
PROMPTS, TOKENS = 2, 4


@pytest.mark.slow
def test_one_command_runs_every_line(tmp_path):
    base, guide = save_tiny(tmp_path / "base", seed=0), save_tiny(tmp_path / "guide", seed=1)
    out = tmp_path / "official.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_official.py")]
    command += ["--base", str(base), "--guide", str(guide), "--max-model-len", "512"]
    command += ["--prompts", str(PROMPTS), "--tokens", str(TOKENS), "--repeats", "1"]
    command += ["--json", str(out), "--logs", str(tmp_path / "logs")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "| paper protocol |" in run.stdout and "| plug-in blendin-top100 |" in run.stdout

    lines = json.loads(out.read_text())["lines"]
    assert set(lines) == {
        "paper protocol",
        "vLLM base alone",
        "plug-in blendin",
        "plug-in blendin-top100",
        "our loop blendin",
        "our loop blendin-top100",
    }
    for name, line in lines.items():
        assert 0 < line["tokens"] <= PROMPTS * TOKENS, name
        assert line["seconds_b1"] > 0 and line["seconds_batch"] > 0, name
    protocol = lines["paper protocol"]
    assert protocol["requests_per_token"] >= 1  # the base every token, the guide on top
    assert lines["plug-in blendin"]["requests_per_token"] == pytest.approx(
        PROMPTS / lines["plug-in blendin"]["tokens"]
    )  # one request an answer
    # the plug-in's diagnostics reached the table
    assert lines["plug-in blendin"]["intervention_rate"] is not None
