"""Every csrc/cuda/*.cu compiles with nvcc for sm_80 and sm_90 (torch-free,
no GPU needed): no errors, no warnings (nvcc, host compiler and ptxas
warnings are errors). The last_block kernel keeps everything in registers
(no local-memory spill, no stack frame); the cooperative kernel fits 64
registers (its streaming loop is checked in test_cuda_static_figures.py)."""

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.cuda.static_figures import ARCHS, CUDA_DIR, find_nvcc, nvcc_command

CUDA_SOURCES = sorted(CUDA_DIR.glob("*.cu"))  # ARCHS: the archs every build defaults to
MAX_REGISTERS = 128  # __launch_bounds__(256, 2): two resident blocks per SM

pytestmark = pytest.mark.skipif(
    find_nvcc() is None, reason="nvcc not found (set CUDA_HOME or PATH)"
)


def compile_one(source: Path, arch: str, out_dir: Path) -> subprocess.CompletedProcess:
    cmd = nvcc_command(
        source,
        arch,
        "-Werror",
        "all-warnings",
        "-Xcompiler",
        "-Wall,-Wextra,-Werror",
        "-c",
        str(source),
        "-o",
        str(out_dir / f"{source.stem}.sm{arch}.o"),
    )
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """All (source, arch) pairs, compiled in parallel once."""
    out_dir = tmp_path_factory.mktemp("nvcc")
    jobs = [(src, arch) for src in CUDA_SOURCES for arch in ARCHS]
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda job: compile_one(job[0], job[1], out_dir), jobs)
        return {(src.name, arch): r for (src, arch), r in zip(jobs, results)}


def function_properties(ptxas_log: str):
    """(function, stack bytes, spill stores, spill loads, registers or None)
    for every function ptxas reports."""
    props = re.findall(
        r"Function properties for (\S+)\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, "
        r"(\d+) bytes spill loads(?:\n(?:ptxas info\s*: )?Used (\d+) registers)?",
        ptxas_log,
    )
    return [
        (name, int(stack), int(st), int(ld), int(regs) if regs else None)
        for name, stack, st, ld, regs in props
    ]


def test_there_are_cuda_sources():
    assert {p.name for p in CUDA_SOURCES} >= {
        "blend_step_cuda.cu",
        "blend_step_f32.cu",
        "blend_step_f16.cu",
        "blend_step_bf16.cu",
    }


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", [p.name for p in CUDA_SOURCES])
def test_compiles_without_warnings_or_spills(compiled, source, arch):
    result = compiled[(source, arch)]
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"nvcc failed for {source} sm_{arch}:\n{log}"
    assert "warning" not in log.lower(), f"warnings for {source} sm_{arch}:\n{log}"
    for name, stack, stores, loads, regs in function_properties(log):
        if "coop_kernel" in name:
            # 64 registers for four blocks per SM: its cold phases (deciding,
            # selecting) spill; its streaming loop may not (test_cuda_static_figures)
            assert regs is None or regs <= 64, f"{name}: {regs} registers"
            continue
        assert stores == 0 and loads == 0, (
            f"{name} spills to local memory on sm_{arch} ({stores} B stores, {loads} B loads)"
        )
        if "blend_step_kernel" in name:
            assert stack == 0, f"{name} uses a {stack}-byte stack frame on sm_{arch}"
            assert regs is None or regs <= MAX_REGISTERS, f"{name}: {regs} registers"
    if source != "blend_step_cuda.cu":
        assert any("blend_step_kernel" in p[0] for p in function_properties(log)), (
            f"no kernel found in the ptxas report of {source}:\n{log}"
        )
