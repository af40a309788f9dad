"""The ASan/UBSan build of the core (tests/run.sh) stops at configure time,
with the fix, when the compiler cannot link the sanitizer runtimes."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

NO_SANITIZER_CXX = """#!/bin/sh
case "$*" in *-fsanitize*) echo "ld: cannot find -lasan" >&2; exit 1;; esac
exec {cxx} "$@"
"""


@pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("g++") is None, reason="needs cmake and g++"
)
def test_missing_sanitizer_runtimes_fail_clearly(tmp_path):
    cxx = tmp_path / "g++"
    cxx.write_text(NO_SANITIZER_CXX.format(cxx=shutil.which("g++")))
    cxx.chmod(0o755)
    result = subprocess.run(
        [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(tmp_path / "build"),
            f"-DCMAKE_CXX_COMPILER={cxx}",
            "-DBLENDIN_SANITIZE=ON",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    words = " ".join(result.stderr.split())
    assert "install the compiler's ASan and UBSan runtimes" in words
    assert "BLENDIN_SANITIZE_TESTS=0" in words
