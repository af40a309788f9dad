"""benchmarks/gpu_check.sh and .ci/cuda_build.sh cannot reach a GPU session
(or CI) broken: their syntax, shellcheck's warnings, and gpu_check.sh run end
to end with a stand-in for python that logs each command and answers as a
GPU machine would (its summary step runs for real)."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [ROOT / "benchmarks" / "gpu_check.sh", ROOT / ".ci" / "cuda_build.sh"]

FAKE_PYTHON = """#!/usr/bin/env bash
# Stand-in for a GPU machine's python: logs its arguments; FAKE_BUILD_RC is
# pip's exit code, FAKE_NO_VARIANTS makes `bench step --variants` unknown,
# FAKE_NO_TRANSFORMERS hides transformers; the summary script runs for real.
echo "$*" >> "$FAKE_LOG"
case "$1" in
  -) script=$(cat)
     if grep -q summary.json <<< "$script"; then exec "$REAL_PYTHON" - <<< "$script"; fi ;;
  -c) case "$2" in
        *get_device_capability*) echo 90 ;;
        *"import transformers"*) [ -z "${FAKE_NO_TRANSFORMERS:-}" ]; exit ;;
      esac ;;
  -m) if [ "$2" = pip ]; then exit "${FAKE_BUILD_RC:-0}"; fi
      if [ "$2" = blendin_ext.cli ] && [ -n "${FAKE_NO_VARIANTS:-}" ]; then
        echo "blendin: error: unrecognized arguments: --variants all" >&2; exit 2
      fi ;;
esac
exit 0
"""


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (Debian: apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scripts_are_executable():
    for script in SCRIPTS:
        assert os.access(script, os.X_OK), f"{script} is not executable"


def _run_gpu_check(tmp_path, **fake_env):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    log, out_dir = tmp_path / "commands.log", tmp_path / "out"
    env = dict(
        os.environ, PYTHON=str(fake), FAKE_LOG=str(log), REAL_PYTHON=sys.executable, **fake_env
    )
    result = subprocess.run(
        ["bash", str(SCRIPTS[0]), str(out_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    commands = log.read_text().splitlines()
    summary = json.loads((out_dir / "summary.json").read_text())
    return result, commands, summary


def _ran(commands, *words):
    return [c for c in commands if all(w in c for w in words)]


def test_every_stage_runs_in_order(tmp_path):
    result, commands, summary = _run_gpu_check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    stages = [
        _ran(commands, "pip install --no-build-isolation --no-deps -e ."),
        _ran(commands, "tests/cuda/gpu_runner.py"),
        _ran(commands, "bench_step.py --device cuda --dtypes bfloat16"),
        _ran(commands, "blendin_ext.cli bench step --device cuda --variants all", "--json"),
        _ran(commands, "bench_generate.py --device cuda --batch 1,16", "--profile"),
    ]
    assert all(len(s) == 1 for s in stages), commands
    positions = [commands.index(s[0]) for s in stages]
    assert positions == sorted(positions)
    assert not _ran(commands, "bench_step.py --device cuda --budget 0.1")  # no fallback grid
    assert summary["exit_codes"] == dict(
        build="0", tests="0", targets="0", variants="0", generate="0"
    )


def test_a_missing_variants_flag_falls_back_to_the_one_kernel_grid(tmp_path):
    result, commands, summary = _run_gpu_check(tmp_path, FAKE_NO_VARIANTS="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "has no --variants yet" in result.stdout
    assert len(_ran(commands, "bench_step.py --device cuda --budget 0.1")) == 1
    assert summary["exit_codes"]["variants"] == "0"


def test_a_failed_build_skips_the_device_stages_and_fails(tmp_path):
    result, commands, summary = _run_gpu_check(tmp_path, FAKE_BUILD_RC="1")
    assert result.returncode != 0
    assert not _ran(commands, "gpu_runner.py") and not _ran(commands, "bench_")
    assert summary["exit_codes"]["build"] == "1"
    assert summary["exit_codes"]["tests"] == "skipped"


def test_the_decode_stage_needs_transformers(tmp_path):
    result, commands, summary = _run_gpu_check(tmp_path, FAKE_NO_TRANSFORMERS="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "transformers is not installed" in result.stdout
    assert not _ran(commands, "bench_generate.py")
    assert summary["exit_codes"]["generate"] == "skipped"


def test_cuda_build_fails_loudly_without_nvcc(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")}
    env["PATH"] = "/usr/bin:/bin"
    if shutil.which("nvcc", path=env["PATH"]):
        pytest.skip("nvcc lies in /usr/bin here")
    result = subprocess.run(
        ["bash", str(SCRIPTS[1])], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "nvcc not found" in result.stderr
