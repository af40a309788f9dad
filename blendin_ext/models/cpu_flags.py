"""The CPU's feature flags as the Linux kernel reports them (/proc/cpuinfo),
for the defaults that depend on them: ``dtype="auto"`` (loading.py) and the
packed layers' kernel (packing.py). Elsewhere (no /proc/cpuinfo) no flag is
reported, and both defaults fall back to their portable choice."""

from __future__ import annotations

import functools

CPUINFO = "/proc/cpuinfo"


@functools.lru_cache(maxsize=None)  # flags do not change while a process runs
def cpu_flags(cpuinfo: str = CPUINFO) -> frozenset:
    """The flags of the first CPU listed; empty where they cannot be read."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16(cpuinfo: str = CPUINFO) -> bool:
    """Whether the CPU has bf16 arithmetic instructions (avx512_bf16 or AMX)."""
    return bool(cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16"})


def cpu_has_amx_bf16(cpuinfo: str = CPUINFO) -> bool:
    """Whether the CPU has AMX tiles for bf16, which oneDNN's kernels use."""
    return "amx_bf16" in cpu_flags(cpuinfo)
