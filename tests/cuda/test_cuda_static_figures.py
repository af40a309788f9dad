"""The CUDA kernels' static figures (tests/cuda/static_figures.py) hold
their targets; `python benchmarks/cuda_static.py` prints them all.

- cooperative (the default variant): 64 registers, so 4 blocks of 256
  threads per SM (50% occupancy) on sm_80 and sm_90, every dtype; its
  streaming loop keeps (almost) everything in registers: the few local
  loads ptxas leaves there reload loop-invariant values, and may not grow.
- in the emulator, every mode of the cooperative kernel reads each logit
  from DRAM once (first reads), re-reads little (L1/L2), and no block does
  much more than its share: no phase falls on one block while the rest of
  the grid idles.
"""

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.cuda.emulator import build_emulator, cuda_include_dir
from tests.cuda.static_figures import find_nvcc, find_nvdisasm, ptxas_figures, read_figures

LOOP_LOCAL_OPS_MAX = 22  # today's most (bfloat16/float16, sm_90): a regression guard


@pytest.fixture(scope="module")
def kernels():
    if find_nvcc() is None:
        pytest.skip("nvcc not found")
    with tempfile.TemporaryDirectory() as tmp:
        return ptxas_figures(Path(tmp))


def test_cooperative_kernel_has_half_occupancy(kernels):
    coop = [k for k in kernels if k.variant == "cooperative"]
    assert len(coop) == 6, coop  # 3 dtypes x 2 archs
    for k in coop:
        assert k.registers <= 64 and k.occupancy >= 0.5, k


def test_last_block_kernel_has_no_spill(kernels):
    for k in kernels:
        if k.variant == "last_block":
            assert k.spill_store_bytes == 0 and k.spill_load_bytes == 0, k


def test_streaming_loop_keeps_to_registers(kernels):
    if find_nvdisasm() is None:
        pytest.skip("nvdisasm not found (pip install nvidia-cuda-nvdisasm)")
    for k in kernels:
        if k.variant == "cooperative":
            assert k.loop_local_ops <= LOOP_LOCAL_OPS_MAX, k


@pytest.mark.skipif(
    shutil.which("g++") is None or cuda_include_dir() is None,
    reason="the CUDA emulator needs g++ and the CUDA toolkit headers",
)
def test_every_mode_reads_each_logit_once_and_spreads_the_work(tmp_path):
    # 2 rows of 8192 float32 logits, 8 resident blocks: teams of 4
    reads = read_figures(
        build_emulator(tmp_path), batch=2, vocab=8192, resident_blocks=8, variants=("cooperative",)
    )
    for r in reads:
        assert r.first_x <= 1.01, r  # DRAM delivers each logit once
        assert r.read_x <= 2.7, r  # re-reads of parts just read (L1/L2)
        assert r.balance <= 2.0, r  # no block far beyond its share
    greedy = [r for r in reads if r.mode.startswith("greedy")]
    assert all(r.read_x <= 1.5 for r in greedy), greedy
