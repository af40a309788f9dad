"""Figures of the CUDA kernels that need no GPU:

- from ptxas (nvcc -Xptxas -v), per kernel variant, dtype and arch:
  registers, shared memory, spill bytes and the theoretical occupancy they
  allow (256-thread blocks); with nvdisasm, the local-memory instructions
  inside the cooperative kernel's streaming loop (there must be none);
- from the block emulator, per variant and mode: bytes of logits read in
  all (x the logits), read first (what DRAM must deliver), and by the
  busiest block (x one model row).

`python benchmarks/cuda_static.py` prints both tables (and --json writes
them); tests/cuda/test_cuda_static_figures.py fails when they regress.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
CUDA_DIR = ROOT / "csrc" / "cuda"
ARCHS = (CUDA_DIR / "default_archs.txt").read_text().strip().split(";")
DTYPE_SOURCES = {
    "float32": "blend_step_f32.cu",
    "float16": "blend_step_f16.cu",
    "bfloat16": "blend_step_bf16.cu",
}
THREADS = 256
# Per-SM limits of the archs we build for: registers, shared memory a block
# may use in all, resident threads and blocks.
SM_LIMITS = {
    "80": dict(regs=65536, smem=167936, threads=2048, blocks=32),
    "90": dict(regs=65536, smem=233472, threads=2048, blocks=32),
}
STREAMING_LOOP = ("// BEGIN STREAMING LOOP", "// END STREAMING LOOP")  # markers in coop_stats.cuh


def find_nvcc() -> Optional[str]:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var) and (Path(os.environ[var]) / "bin" / "nvcc").exists():
            return str(Path(os.environ[var]) / "bin" / "nvcc")
    return shutil.which("nvcc")


def find_nvdisasm() -> Optional[str]:
    """nvdisasm from the toolkit, or from the nvidia-cuda-nvdisasm wheel."""
    found = shutil.which("nvdisasm")
    if found:
        return found
    for site in sys.path:
        hits = glob.glob(os.path.join(site, "nvidia", "cu*", "bin", "nvdisasm"))
        if hits:
            return hits[0]
    return None


def nvcc_command(source: Path, arch: str, *flags: str) -> List[str]:
    """nvcc on one torch-free CUDA source for one arch, with ptxas's
    resource report (-Xptxas -v); `flags` add the rest (warnings, output)."""
    return [
        find_nvcc(),
        "-std=c++17",
        "-O3",
        "--expt-relaxed-constexpr",
        "-lineinfo",
        f"-I{ROOT / 'csrc' / 'include'}",
        f"-gencode=arch=compute_{arch},code=sm_{arch}",
        "-Xptxas",
        "-v",
        *flags,
    ]


def compile_cubin(source: Path, arch: str, out: Path, extra=()) -> subprocess.CompletedProcess:
    cmd = nvcc_command(source, arch, *extra, "-cubin", str(source), "-o", str(out))
    return subprocess.run(cmd, capture_output=True, text=True)


@dataclass
class KernelFigures:
    variant: str
    dtype: str
    arch: str
    registers: int
    shared_bytes: int
    spill_store_bytes: int
    spill_load_bytes: int
    blocks_per_sm: int
    occupancy: float  # resident warps / the SM's maximum
    loop_local_ops: Optional[int]  # local-memory instructions in the streaming loop (cooperative)


def occupancy(registers: int, shared_bytes: int, arch: str):
    """(blocks per SM, occupancy) of 256-thread blocks: registers are given
    out per warp in units of 256, shared memory per block plus 1 KB."""
    lim = SM_LIMITS[arch]
    per_warp = -(-registers * 32 // 256) * 256
    by_regs = lim["regs"] // (per_warp * (THREADS // 32)) if registers else lim["blocks"]
    by_smem = lim["smem"] // (shared_bytes + 1024)
    blocks = min(by_regs, by_smem, lim["threads"] // THREADS, lim["blocks"])
    return blocks, blocks * THREADS / lim["threads"]


_PTXAS = re.compile(
    r"Compiling entry function '(\S+)' for 'sm_\d+'\n(?:ptxas info\s*: Function properties for \S+\n)?"
    r"\s*(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads\n"
    r"ptxas info\s*: Used (\d+) registers(?:, used \d+ barriers)?(?:, \d+ bytes cumulative stack size)?"
    r"(?:, (\d+) bytes smem)?"
)


def loop_lines() -> range:
    text = (CUDA_DIR / "coop_stats.cuh").read_text().splitlines()
    begin = next(i for i, line in enumerate(text, 1) if STREAMING_LOOP[0] in line)
    end = next(i for i, line in enumerate(text, 1) if STREAMING_LOOP[1] in line)
    return range(begin, end + 1)


def local_ops_in_loop(cubin: Path) -> Optional[int]:
    """Local-memory loads and stores that nvdisasm attributes to the lines
    of the streaming loop, in whichever function of `cubin` holds it (None
    without nvdisasm)."""
    nvdisasm = find_nvdisasm()
    if nvdisasm is None:
        return None
    text = subprocess.run(
        [nvdisasm, "-g", "-c", str(cubin)], capture_output=True, text=True, check=True
    ).stdout
    lines, count, where = loop_lines(), 0, None
    for line in text.splitlines():
        info = re.search(r'//## File "([^"]+)", line (\d+)', line)
        if info:
            where = (Path(info.group(1)).name, int(info.group(2)))
        if (
            where
            and where[0] == "coop_stats.cuh"
            and where[1] in lines
            and re.search(r"\b(STL|LDL)\b", line)
        ):
            count += 1
    return count


def ptxas_figures(out_dir: Path) -> List[KernelFigures]:
    """Figures of every kernel in every dtype file, for every default arch."""
    jobs = [(dtype, src, arch) for dtype, src in DTYPE_SOURCES.items() for arch in ARCHS]

    def run(job):
        dtype, src, arch = job
        cubin = out_dir / f"{Path(src).stem}.sm{arch}.cubin"
        return job, cubin, compile_cubin(CUDA_DIR / src, arch, cubin)

    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        results = list(pool.map(run, jobs))
    figures = []
    for (dtype, src, arch), cubin, proc in results:
        if proc.returncode != 0:
            raise RuntimeError(f"nvcc failed for {src} sm_{arch}:\n{proc.stderr}")
        for m in _PTXAS.finditer(proc.stdout + proc.stderr):
            name, _stack, stores, loads, regs, smem = m.groups()
            variant = "cooperative" if "coop_kernel" in name else "last_block"
            blocks, occ = occupancy(int(regs), int(smem or 0), arch)
            figures.append(
                KernelFigures(
                    variant=variant,
                    dtype=dtype,
                    arch=arch,
                    registers=int(regs),
                    shared_bytes=int(smem or 0),
                    spill_store_bytes=int(stores),
                    spill_load_bytes=int(loads),
                    blocks_per_sm=blocks,
                    occupancy=occ,
                    loop_local_ops=local_ops_in_loop(cubin) if variant == "cooperative" else None,
                )
            )
    return sorted(figures, key=lambda f: (f.variant, f.dtype, f.arch))


@dataclass
class ReadFigures:
    variant: str
    mode: str
    read_x: float  # all bytes read / bytes of logits
    first_x: float  # bytes read first in the launch / bytes of logits
    busiest_x: float  # most bytes one block read / bytes of one model row
    balance: float  # most bytes one block read / the blocks' mean
    blocks: int


def emulator_modes(vocab: int):
    """(name, logits maker, blend_step kwargs) for each mode of the step."""
    import torch

    from blendin_ext.testing.op_cases import confident_logits

    def peaked(batch, seed):
        return confident_logits(batch, vocab, seed=seed)

    def flat(batch, seed):
        return torch.randn(batch, vocab, generator=torch.Generator().manual_seed(seed))

    return [
        ("greedy, candidates decide", peaked, dict(gamma=2.0, alpha=0.5)),
        ("greedy, bounded scan", flat, dict(gamma=2.0, alpha=0.5)),
        ("sampled, T=1", flat, dict(gamma=2.0, alpha=0.5, temperature=1.0, seed=1)),
        (
            "top-k 50 + top-p 0.9",
            flat,
            dict(gamma=2.0, alpha=0.5, temperature=1.0, top_k=50, top_p=0.9, seed=1),
        ),
        ("top-p 0.9", flat, dict(gamma=2.0, alpha=0.5, temperature=1.0, top_p=0.9, seed=1)),
        ("top-k 1024", flat, dict(gamma=2.0, alpha=0.5, temperature=1.0, top_k=1024, seed=1)),
    ]


def read_figures(
    exe: Path,
    batch: int = 2,
    vocab: int = 16384,
    resident_blocks: int = 32,
    variants=("last_block", "cooperative"),
) -> List[ReadFigures]:
    """Bytes read per mode, float32 logits, grids of a small GPU: last_block
    on resident_blocks / 4 SMs, cooperative with resident_blocks resident
    (a team of 16 per row at batch 2 and 32)."""
    from tests.cuda.emulator import run_emulated

    row_bytes = vocab * 4
    figures = []
    for name, make, kwargs in emulator_modes(vocab):
        base, guide = make(batch, 1), make(batch, 2)
        for variant in variants:
            reads: Dict[int, tuple] = {}
            grid = (
                dict(num_sms=max(1, resident_blocks // 4))
                if variant == "last_block"
                else dict(resident_blocks=resident_blocks)
            )
            run_emulated(exe, base, guide, variant=variant, reads=reads, **grid, **kwargs)
            total = sum(r[0] for r in reads.values())
            first = sum(r[1] for r in reads.values())
            figures.append(
                ReadFigures(
                    variant=variant,
                    mode=name,
                    read_x=total / (2 * batch * row_bytes),
                    first_x=first / (2 * batch * row_bytes),
                    busiest_x=max(r[0] for r in reads.values()) / row_bytes,
                    balance=max(r[0] for r in reads.values()) * len(reads) / total,
                    blocks=len(reads),
                )
            )
    return figures


def print_tables(kernels: List[KernelFigures], reads: List[ReadFigures]) -> None:
    print("ptxas (256-thread blocks)")
    print(
        f"{'variant':<12} {'dtype':<9} {'arch':<5} {'regs':>4} {'smem B':>7} {'spill B':>8} "
        f"{'blocks/SM':>9} {'occupancy':>9} {'loop local ops':>14}"
    )
    for k in kernels:
        loop = "-" if k.loop_local_ops is None else str(k.loop_local_ops)
        print(
            f"{k.variant:<12} {k.dtype:<9} sm_{k.arch:<2} {k.registers:>4} {k.shared_bytes:>7} "
            f"{k.spill_store_bytes:>8} {k.blocks_per_sm:>9} {k.occupancy:>9.0%} {loop:>14}"
        )
    print()
    print(
        "emulator: bytes of logits read (read x, first x: x all logits; busiest x: the busiest"
        " block, x one model row; balance: busiest / mean block)"
    )
    print(
        f"{'mode':<26} {'variant':<12} {'read x':>7} {'first x':>8} {'busiest x':>9} "
        f"{'balance':>8} {'blocks':>6}"
    )
    for r in reads:
        print(
            f"{r.mode:<26} {r.variant:<12} {r.read_x:>7.2f} {r.first_x:>8.2f} "
            f"{r.busiest_x:>9.2f} {r.balance:>8.1f} {r.blocks:>6}"
        )


def as_json(kernels, reads) -> dict:
    return {"ptxas": [asdict(k) for k in kernels], "emulator_reads": [asdict(r) for r in reads]}
