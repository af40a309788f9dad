#!/usr/bin/env bash
# CI stage: builds blendin_ext._C with its CUDA kernel exactly as a GPU
# machine would (setup.py with BLENDIN_CUDA=1: nvcc for every csrc/cuda/*.cu
# at the archs of csrc/cuda/default_archs.txt, the torch CUDA glue compiled
# against a CUDA build of torch, one shared object linked against that
# build's libraries), then checks that object's undefined symbols. It does
# not run it: there is no GPU. Fails on any compile error, duplicate or
# undefined symbol, a missing nvcc, or a failed download.
#
#   bash .ci/cuda_build.sh        (after .ci/run's venv exists; PYTHON overrides)
#
# Needs: nvcc (CUDA 13.x, as the wheel), the venv's CPU torch (its
# cpp_extension drives setup.py), ninja, unzip or python's zipfile, ~1.5 GB of disk.
# Downloads the CUDA wheel of torch once (~0.5 GB from PyPI) into
# build/cuda-ci/wheel; unpacks its headers and the libraries linked against.
set -euo pipefail
cd "$(dirname "$0")/.."

# In CI each stage is its own shell: use the venv .ci/main.sh made.
if [ -z "${PYTHON:-}" ] && [ -f .venv/bin/activate ]; then
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
PY=${PYTHON:-python}
TORCH_CUDA_VERSION=${BLENDIN_CUDA_TORCH_VERSION:-2.11.0}  # a CUDA 13.0 build on PyPI
WORK=build/cuda-ci
START=$SECONDS

# The toolkit: CUDA_HOME, else the one the nvcc on PATH belongs to, as nvcc
# itself reports it (PATH may hold a symlink or a wrapper script, whose folder
# has no include/ or lib64/).
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc > /dev/null; then
  here=$(nvcc --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ _HERE_=//p')
  [ -n "$here" ] && CUDA_HOME=$(cd "$here/.." && pwd)
fi
NVCC=${CUDA_HOME:+$CUDA_HOME/bin/nvcc}
if [ -z "$NVCC" ] || [ ! -x "$NVCC" ]; then
  echo "ERROR: nvcc not found (set CUDA_HOME or PATH): the CUDA build cannot be checked" >&2
  exit 1
fi
export CUDA_HOME
echo "== CUDA build check: $("$NVCC" --version | tail -1), torch $TORCH_CUDA_VERSION (CUDA wheel)"

mkdir -p "$WORK/wheel"
wheels=("$WORK"/wheel/torch-"$TORCH_CUDA_VERSION"-*.whl)
if [ ! -f "${wheels[0]}" ]; then
  "$PY" -m pip download -q --no-deps "torch==$TORCH_CUDA_VERSION" -d "$WORK/wheel"
  wheels=("$WORK"/wheel/torch-"$TORCH_CUDA_VERSION"-*.whl)
fi
WHEEL=${wheels[0]}
[ -f "$WHEEL" ] || { echo "ERROR: no torch $TORCH_CUDA_VERSION wheel in $WORK/wheel" >&2; exit 1; }

# Headers, version.py and the libraries cpp_extension links a CUDA extension
# against (c10, torch, torch_cpu, torch_python, c10_cuda, torch_cuda).
UNPACKED="$WORK/torch-$TORCH_CUDA_VERSION"
if [ ! -f "$UNPACKED/.complete" ]; then
  rm -rf "$UNPACKED"
  "$PY" - "$WHEEL" "$UNPACKED" <<'EOF'
import re, sys, zipfile
wanted = re.compile(r"^torch/(include/.*|version\.py|lib/lib(c10|c10_cuda|torch|torch_cpu"
                    r"|torch_python|torch_cuda)\.so)$")
with zipfile.ZipFile(sys.argv[1]) as wheel:
    names = [n for n in wheel.namelist() if wanted.match(n)]
    wheel.extractall(sys.argv[2], names)
print(f"unpacked {len(names)} files of {sys.argv[1]}")
EOF
  touch "$UNPACKED/.complete"
fi

"$PY" .ci/cuda_build.py --torch-dir "$UNPACKED/torch" --out "$WORK"
echo "== CUDA build check passed in $((SECONDS - START)) s"
