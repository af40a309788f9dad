"""Builds blendin_ext._C with its CUDA kernel against an unpacked CUDA build
of torch, as `BLENDIN_CUDA=1 pip install -e .` would on a GPU machine, and
checks the shared object it links. Nothing is run. Called by
.ci/cuda_build.sh, which downloads and unpacks the wheel.

    python .ci/cuda_build.py --torch-dir DIR/torch --out DIR

The build is setup.py itself (its sources, flags and CPU-variant objects),
driven by the installed torch's `torch.utils.cpp_extension` (CI's CPU build
of torch, which cannot be a CUDA build here: that one needs NVIDIA's
libraries to import). Four module globals are pointed at the unpacked CUDA
build instead, so its headers and libraries are the ones compiled and linked
against; each is read before it is replaced, so a renamed one fails here
instead of being silently ignored:

  torch.version.cuda               the wheel's CUDA version (setup.py's check)
  cpp_extension.CUDA_HOME          the toolkit of `nvcc` (None under CPU torch)
  cpp_extension._TORCH_PATH        include paths: the wheel's torch/include
  cpp_extension.TORCH_LIB_PATH     library path: the wheel's torch/lib

Then every undefined dynamic symbol of the linked object must be defined by
one of the libraries it needs (the wheel's libc10*/libtorch*, the toolkit's
libcudart, the system's C/C++ runtimes) or be Python's C API, which the
interpreter provides: a symbol declared and never defined fails here rather
than at `import blendin_ext` on a GPU machine. Duplicate definitions already
fail the link itself ("multiple definition of ...").
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON_API = re.compile(r"^_?Py")  # defined by the interpreter that imports _C


def wheel_cuda_version(torch_dir: Path) -> str:
    """torch.version.cuda of the unpacked wheel, read without importing it."""
    text = (torch_dir / "version.py").read_text()
    match = re.search(r"^cuda(?:: [^=]+)? = '([0-9.]+)'", text, re.M)
    if match is None:
        raise SystemExit(f"{torch_dir}/version.py names no CUDA version: not a CUDA build of torch")
    return match.group(1)


def point_cpp_extension_at(torch_dir: Path, cuda_version: str) -> None:
    import torch
    from torch.utils import cpp_extension

    cuda_home = cpp_extension._find_cuda_home()
    if cuda_home is None:
        raise SystemExit("nvcc not found: set CUDA_HOME or put nvcc on PATH")
    replacements = [
        (torch.version, "cuda", cuda_version),
        (cpp_extension, "CUDA_HOME", cuda_home),
        (cpp_extension, "_TORCH_PATH", str(torch_dir)),
        (cpp_extension, "TORCH_LIB_PATH", str(torch_dir / "lib")),
    ]
    for module, name, value in replacements:
        print(f"  {module.__name__}.{name}: {vars(module)[name]!r} -> {value!r}")
        setattr(module, name, value)


def run_setup_build_ext(out: Path) -> Path:
    """setup.py build_ext into out/lib; returns the built _C shared object."""
    os.environ["BLENDIN_CUDA"] = "1"
    argv = sys.argv
    sys.argv = [
        "setup.py",
        "build_ext",
        "--build-lib",
        str(out / "lib"),
        "--build-temp",
        str(out / "temp"),
    ]
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    finally:
        sys.argv = argv
        os.chdir(cwd)
    built = sorted((out / "lib" / "blendin_ext").glob("_C*.so"))
    if len(built) != 1:
        raise SystemExit(f"expected one blendin_ext/_C*.so under {out / 'lib'}, found {built}")
    return built[0]


def dynamic_symbols(path: Path, defined: bool) -> set[str]:
    """Names (version suffix dropped) of the dynamic symbols a shared object
    defines, or the strong undefined ones it needs (weak ones may stay unset)."""
    flag = "--defined-only" if defined else "--undefined-only"
    lines = subprocess.run(
        ["nm", "-D", flag, str(path)], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    names = set()
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and (defined or fields[-2] == "U"):
            names.add(fields[-1].split("@")[0])
    return names


def needed_libraries(path: Path) -> list[str]:
    out = subprocess.run(
        ["readelf", "-d", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def system_libraries() -> dict[str, str]:
    """ldconfig's cache: library name -> path (x86-64 entries first)."""
    out = subprocess.run(["ldconfig", "-p"], check=True, capture_output=True, text=True).stdout
    found = {}
    for name, arch, path in re.findall(r"^\s*(\S+) \(([^)]*)\) => (\S+)$", out, re.M):
        if name not in found or "x86-64" in arch:
            found[name] = path
    return found


def check_symbols(shared_object: Path, torch_dir: Path, cuda_home: str) -> None:
    search = [torch_dir / "lib", Path(cuda_home) / "lib64", Path(cuda_home) / "lib"]
    system = system_libraries()
    provided: set[str] = set()
    for name in needed_libraries(shared_object):
        path = next((d / name for d in search if (d / name).exists()), None) or system.get(name)
        if path is None:
            raise SystemExit(
                f"{shared_object.name} needs {name}, found neither in {search} nor by ldconfig"
            )
        print(f"  needs {name}: {path}")
        provided |= dynamic_symbols(Path(path), defined=True)
    missing = sorted(
        s
        for s in dynamic_symbols(shared_object, defined=False) - provided
        if not PYTHON_API.match(s)
    )
    if missing:
        names = subprocess.run(
            ["c++filt"], input="\n".join(missing), capture_output=True, text=True, check=True
        ).stdout
        raise SystemExit(
            f"{len(missing)} undefined symbol(s) in {shared_object.name}, defined by "
            f"none of the libraries it needs (import would fail):\n{names}"
        )
    print(
        f"  every undefined symbol of {shared_object.name} is defined by a library it needs "
        "or by Python"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--torch-dir",
        type=Path,
        required=True,
        help="the unpacked wheel's torch/ folder (include/, lib/, version.py)",
    )
    parser.add_argument("--out", type=Path, required=True, help="build folder (temp/, lib/)")
    args = parser.parse_args(argv)
    torch_dir, out = args.torch_dir.resolve(), args.out.resolve()
    cuda_version = wheel_cuda_version(torch_dir)
    print(f"== building against {torch_dir} (CUDA {cuda_version})")
    point_cpp_extension_at(torch_dir, cuda_version)
    shared_object = run_setup_build_ext(out)
    print(f"== checking {shared_object}")
    from torch.utils import cpp_extension

    check_symbols(shared_object, torch_dir, cpp_extension.CUDA_HOME)


if __name__ == "__main__":
    main()
