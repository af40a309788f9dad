#!/usr/bin/env bash
# The one script for whoever has a GPU: builds blendin_ext with its CUDA
# kernel, runs the GPU tests and the CUDA benchmark, and leaves everything in
# OUT_DIR (gpu_check.log, build.log, tests.json, bench_targets.json,
# bench_cuda.json, summary.json). Needs a CUDA build of torch and nvcc;
# installs nothing else and needs no network. Budget: under 8 minutes
# (each stage has its own timeout, and later stages run whatever happens).
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# PYTHON picks the interpreter (default python3).
set -uo pipefail

OUT_DIR=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1

START=$(date +%s)
BUDGET=465  # seconds for everything, summary included
stage() { echo; echo "== $1 (t=$(( $(date +%s) - START )) s)"; }
# seconds a stage may take: its own cap, or what is left of the budget
allow() {
  local left=$(( BUDGET - 15 - ($(date +%s) - START) ))
  [ "$left" -lt 1 ] && left=1
  [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}

stage "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
command -v nvcc && nvcc --version | tail -2
"$PY" - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "| GPU:",
      torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
EOF
ARCH=$("$PY" -c "import torch; print(''.join(map(str, torch.cuda.get_device_capability(0))))")

stage "build (sm_$ARCH only)"
export BLENDIN_CUDA=1 BLENDIN_CUDA_ARCHS="$ARCH" MAX_JOBS="$(nproc)"
timeout "$(allow 270)" "$PY" -m pip install --no-build-isolation --no-deps -e . > "$OUT_DIR/build.log" 2>&1
BUILD_RC=$?
tail -n 15 "$OUT_DIR/build.log"
echo "build exit code: $BUILD_RC"
"$PY" -c "import torch, blendin_ext; print('CUDA kernel registered:', torch._C._dispatch_has_kernel_for_dispatch_key('blendin_ext::blend_step', 'CUDA'))"

TESTS_RC=1
BENCH_RC=1
if [ "$BUILD_RC" -eq 0 ]; then
  stage "GPU tests"
  BLENDIN_REQUIRE_CUDA=1 timeout "$(allow 200)" "$PY" tests/cuda/gpu_runner.py --deadline 150 \
    --json "$OUT_DIR/tests.json" --junit "$OUT_DIR/tests.xml"
  TESTS_RC=$?

  stage "benchmark: the issue's targets (bf16, V=128256, B=1 and 256)"
  timeout "$(allow 60)" "$PY" benchmarks/bench_step.py --device cuda --dtypes bfloat16 --batches 1,256 \
    --vocabs 128256 --budget 0.3 --json "$OUT_DIR/bench_targets.json"

  stage "benchmark: full CUDA grid"
  # rows are saved as they come: a grid cut short by the budget keeps them
  timeout "$(allow 200)" "$PY" benchmarks/bench_step.py --device cuda --budget 0.15 \
    --json "$OUT_DIR/bench_cuda.json"
  BENCH_RC=$?
fi

stage "summary"
BUILD_RC=$BUILD_RC TESTS_RC=$TESTS_RC BENCH_RC=$BENCH_RC OUT_DIR="$OUT_DIR" \
ELAPSED=$(( $(date +%s) - START )) "$PY" - <<'EOF'
import json, os
out = os.environ["OUT_DIR"]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
summary = {"build_exit_code": int(os.environ["BUILD_RC"]),
           "tests_exit_code": int(os.environ["TESTS_RC"]),
           "bench_exit_code": int(os.environ["BENCH_RC"]),
           "elapsed_s": int(os.environ["ELAPSED"]), "tests": load("tests.json")}
targets = load("bench_targets.json")
if targets:
    summary["gpu"] = targets["meta"].get("gpu")
    summary["targets"] = [{k: r.get(k) for k in ("dtype", "batch", "vocab", "kernel_us", "fused_us",
                                                 "eager_us", "speedup_vs_eager", "kernel_gb_s",
                                                 "pct_of_peak")} for r in targets["rows"]]
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
print(json.dumps(summary, indent=1))
EOF
echo "total: $(( $(date +%s) - START )) s; results in $OUT_DIR"
[ "$BUILD_RC" -eq 0 ] && [ "$TESTS_RC" -eq 0 ]
