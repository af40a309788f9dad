"""Runs the CUDA kernel of csrc/cuda in the CPU block emulator
(tests/cuda/emu): builds the emulator once, writes a case, reads back a
BlendStepResult. Lets the kernel's logic be tested on machines without a GPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import torch

from blendin_ext.ops.args import BlendStepResult
from blendin_ext.ops.maps import GuideMap, as_guide_map

ROOT = Path(__file__).resolve().parents[2]
EMU_DIR = Path(__file__).resolve().parent / "emu"


def cuda_include_dir() -> Optional[Path]:
    """The CUDA toolkit headers (cuda_fp16.h) the emulator compiles against."""
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]) / "include")
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = Path(os.path.realpath(nvcc))
        candidates += [real.parent.parent / "include", Path("/usr/local/cuda/include")]
    candidates.append(Path("/usr/local/cuda/include"))
    for c in candidates:
        if (c / "cuda_fp16.h").exists() and (c / "vector_types.h").exists():
            return c
    return None


def build_emulator(out_dir: Path) -> Path:
    """Compiles tests/cuda/emu/emu_main.cpp with the host compiler."""
    include = cuda_include_dir()
    if include is None:
        raise FileNotFoundError("CUDA headers (cuda_fp16.h) not found")
    cxx = os.environ.get("CXX", "g++")
    exe = out_dir / "emu_main"
    cmd = [
        cxx,
        "-std=c++17",
        "-O1",
        "-w",
        "-U_FORTIFY_SOURCE",
        f"-I{ROOT / 'csrc' / 'include'}",
        f"-I{include}",
        str(EMU_DIR / "emu_main.cpp"),
        "-o",
        str(exe),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


def _write(path: Path, tensor: torch.Tensor) -> None:
    tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tofile(path)


def _storage(logits: torch.Tensor):
    """(flat buffer, row stride) with the rows where the kernel expects them."""
    batch, vocab = logits.shape
    stride = logits.stride(0) if batch > 1 else vocab
    if stride == 0:
        return logits[0].contiguous(), 0
    stride = max(stride, vocab)
    buf = torch.zeros((batch, stride), dtype=logits.dtype)
    buf[:, :vocab] = logits.cpu()
    return buf.flatten(), stride


_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def run_emulated(
    exe: Path,
    base: torch.Tensor,
    guide: torch.Tensor,
    *,
    guide_to_base=None,
    gamma=0.4,
    alpha="auto",
    agree_bonus=0.1,
    temperature=0.0,
    top_k=None,
    top_p=None,
    seed=0,
    offset=0,
    num_sms=2,
    min_slice=0,
    order="shuffle",
    emu_seed=1,
    variant="last_block",
    resident_blocks=16,
    team_cap=0,
    traces: Optional[dict] = None,
    reads: Optional[dict] = None,
) -> BlendStepResult:
    """blend_step's arguments (as for blendin_ext.blend_step) run through the
    emulated CUDA kernel `variant` ("last_block" or "cooperative").
    last_block: num_sms / min_slice shape the grid. cooperative: the grid
    fits `resident_blocks` (SMs x occupancy); team_cap > 0 caps the blocks
    per row. order is the order blocks start in: natural, reverse or
    shuffle. `traces`, if given, receives how many blocks took each traced
    path of the kernel; `reads` maps each block to (bytes of logits it read,
    of which read first in the launch: what DRAM must deliver)."""
    batch, vocab = base.shape
    if batch == 0:
        empty = torch.empty(0)
        return BlendStepResult(empty.long(), empty.bool(), empty, empty, empty, empty)
    maps: Optional[GuideMap] = as_guide_map(guide_to_base, vocab)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        base_buf, base_stride = _storage(base)
        guide_buf, guide_stride = _storage(guide)
        _write(d / "base.bin", base_buf)
        _write(d / "guide.bin", guide_buf)
        meta = dict(
            batch=batch,
            vocab=vocab,
            guide_vocab=guide.shape[1],
            base_stride=base_stride,
            guide_stride=guide_stride,
            dtype=_DTYPES[base.dtype],
            agree_bonus=float(agree_bonus),
            num_sms=num_sms,
            min_slice=min_slice,
            order=order,
            emu_seed=emu_seed,
            g2b_int64=0,
            variant=variant,
            resident_blocks=resident_blocks,
            team_cap=team_cap,
        )
        if maps is not None:
            _write(d / "g2b.bin", maps.guide_to_base)
            _write(d / "b2g.bin", maps.base_to_guide)
            meta["g2b_int64"] = int(maps.guide_to_base.dtype == torch.int64)
        alpha = -1.0 if isinstance(alpha, str) else alpha
        params = dict(
            gamma=(gamma, torch.float32),
            alpha=(alpha, torch.float32),
            temperature=(temperature, torch.float32),
            top_k=(0 if top_k is None else top_k, torch.int32),
            top_p=(1.0 if top_p is None else top_p, torch.float32),
            seed=(seed, torch.int64),
            offset=(offset, torch.int64),
        )
        for name, (value, dtype) in params.items():
            if isinstance(value, torch.Tensor):
                _write(d / f"{name}.bin", value.to(dtype).reshape(-1))
                meta[f"{name}_stride"] = 0 if value.numel() == 1 else 1
                meta[name] = 0
            else:
                meta[name] = value
        (d / "meta.txt").write_text("".join(f"{k} {v}\n" for k, v in meta.items()))
        proc = subprocess.run([str(exe), str(d)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"emulated kernel failed ({proc.returncode}):\n{proc.stderr}")
        raw = (d / "out.bin").read_bytes()
        if traces is not None:
            for line in (d / "trace.txt").read_text().splitlines():
                name, count = line.split()
                traces[name] = traces.get(name, 0) + int(count)
        if reads is not None:
            for line in (d / "reads.txt").read_text().splitlines():
                block, total, first = line.split()
                reads[int(block)] = (int(total), int(first))
    tokens = torch.frombuffer(bytearray(raw[: 8 * batch]), dtype=torch.int64)
    pos = 8 * batch
    intervened = torch.frombuffer(bytearray(raw[pos : pos + batch]), dtype=torch.uint8).bool()
    pos += batch
    floats = []
    for _ in range(4):
        floats.append(torch.frombuffer(bytearray(raw[pos : pos + 4 * batch]), dtype=torch.float32))
        pos += 4 * batch
    return BlendStepResult(tokens.clone(), intervened.clone(), *(f.clone() for f in floats))
