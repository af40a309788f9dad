#!/usr/bin/env bash
# The one script for whoever has a GPU: builds blendin_ext with its CUDA
# kernel, runs the GPU tests, times the kernel (the issue's targets and every
# kernel variant), times the decode loop beside transformers' generate() and
# profiles a few of its B=1 steps. Everything lands in OUT_DIR:
#   gpu_check.log, build.log, tests.json / tests.xml, bench_targets.json,
#   bench_variants.json (or bench_cuda.json), bench_generate.json,
#   profile/ (traces, top ops, launches / syncs / copies per token),
#   summary.json
# Needs a CUDA build of torch and nvcc; installs nothing else and needs no
# network (transformers for the decode-loop stage, pytest optional). Budget:
# under 8 minutes: each stage has its own timeout, and the stages after a
# failed or cut one still run.
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# PYTHON picks the interpreter (default python3). tests/test_gpu_check_script.py
# checks this script's syntax and runs it end to end with stand-ins.
set -uo pipefail

OUT_DIR=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1

START=$(date +%s)
BUDGET=465  # seconds for everything, summary included
stage() { echo; echo "== $1 (t=$(( $(date +%s) - START )) s)"; }
# seconds a stage may take: its own cap, or what is left of the budget
allow() {
  local left=$(( BUDGET - 15 - ($(date +%s) - START) ))
  [ "$left" -lt 1 ] && left=1
  if [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}
# a stage's command under its time cap; SIGINT first, so pytest and the
# benchmarks can still write what they have
capped() { local cap; cap=$(allow "$1"); shift; timeout -s INT -k 10 "$cap" "$@"; }

stage "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
command -v nvcc && nvcc --version | tail -2
"$PY" - <<'EOF'
import importlib.util
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "| GPU:",
      torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
print("optional packages:", {name: importlib.util.find_spec(name) is not None
                             for name in ("pytest", "scipy", "transformers", "ninja")})
EOF
ARCH=$("$PY" -c "import torch; print(''.join(map(str, torch.cuda.get_device_capability(0))))")

stage "build (sm_$ARCH only)"
MAX_JOBS=$(nproc)
export BLENDIN_CUDA=1 BLENDIN_CUDA_ARCHS="$ARCH" MAX_JOBS
capped 200 "$PY" -m pip install --no-build-isolation --no-deps -e . > "$OUT_DIR/build.log" 2>&1
BUILD_RC=$?
tail -n 15 "$OUT_DIR/build.log"
if [ "$BUILD_RC" -eq 0 ] && ! "$PY" -c "import torch, blendin_ext, sys; sys.exit(not torch._C._dispatch_has_kernel_for_dispatch_key('blendin_ext::blend_step', 'CUDA'))"; then
  echo "the build succeeded but blendin_ext has no CUDA kernel registered"
  BUILD_RC=1
fi
echo "build exit code: $BUILD_RC"

TESTS_RC=skipped
TARGETS_RC=skipped
VARIANTS_RC=skipped
GENERATE_RC=skipped
if [ "$BUILD_RC" -eq 0 ]; then
  stage "GPU tests"
  BLENDIN_REQUIRE_CUDA=1 capped 170 "$PY" tests/cuda/gpu_runner.py --deadline 140 \
    --json "$OUT_DIR/tests.json" --junit "$OUT_DIR/tests.xml"
  TESTS_RC=$?

  stage "benchmark: the issue's targets (bf16, V=128256, B=1 and 256)"
  capped 40 "$PY" benchmarks/bench_step.py --device cuda --dtypes bfloat16 --batches 1,256 \
    --vocabs 128256 --budget 0.3 --json "$OUT_DIR/bench_targets.json"
  TARGETS_RC=$?

  # ---- the kernel variants side by side -------------------------------------
  # `blendin bench step --variants all` times every kernel variant in one
  # process. Until that flag exists, the grid of the one kernel runs instead.
  stage "benchmark: every kernel variant (blendin bench step --device cuda --variants all)"
  capped 90 "$PY" -m blendin_ext.cli bench step --device cuda --variants all --budget 0.1 \
    --json "$OUT_DIR/bench_variants.json" 2> "$OUT_DIR/bench_variants.err"
  VARIANTS_RC=$?
  cat "$OUT_DIR/bench_variants.err"
  if [ "$VARIANTS_RC" -eq 2 ] && grep -q "unrecognized arguments: --variants" "$OUT_DIR/bench_variants.err"; then
    echo "bench step has no --variants yet: timing the CUDA grid of the one kernel instead"
    capped 90 "$PY" benchmarks/bench_step.py --device cuda --budget 0.1 \
      --json "$OUT_DIR/bench_cuda.json"
    VARIANTS_RC=$?
  fi

  stage "decode loop: generate() vs our loop, base-only and BlendIn, B=1 and 16, + B=1 profile"
  if "$PY" -c "import transformers" 2> /dev/null; then
    # The sizes of the first GPU run (issue 22): a random 16x2048 base, an
    # 8x1024 guide, V=128256, bf16, 64 new tokens.
    capped 150 "$PY" benchmarks/bench_generate.py --device cuda --batch 1,16 --vocab 128256 \
      --base-size 16x2048 --guide-size 8x1024 --new-tokens 64 --repeats 3 \
      --profile "$OUT_DIR/profile" --profile-tokens 8 --json "$OUT_DIR/bench_generate.json"
    GENERATE_RC=$?
  else
    echo "transformers is not installed: the decode-loop stage needs it (skipped)"
  fi
fi

stage "summary"
BUILD_RC=$BUILD_RC TESTS_RC=$TESTS_RC TARGETS_RC=$TARGETS_RC VARIANTS_RC=$VARIANTS_RC \
GENERATE_RC=$GENERATE_RC OUT_DIR="$OUT_DIR" ELAPSED=$(( $(date +%s) - START )) "$PY" - <<'EOF'
import json, os
out = os.environ["OUT_DIR"]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
summary = {"exit_codes": {stage: os.environ[f"{stage.upper()}_RC"]
                          for stage in ("build", "tests", "targets", "variants", "generate")},
           "elapsed_s": int(os.environ["ELAPSED"]), "tests": load("tests.json")}
targets = load("bench_targets.json")
if targets:
    summary["gpu"] = targets["meta"].get("gpu")
    summary["targets"] = [{k: r.get(k) for k in ("dtype", "batch", "vocab", "kernel_us", "fused_us",
                                                 "eager_us", "speedup_vs_eager", "kernel_gb_s",
                                                 "pct_of_peak")} for r in targets["rows"]]
generate = load("bench_generate.json")
if generate:
    summary["generate"] = [{k: r.get(k) for k in ("name", "batch", "tokens_per_s",
                                                  "intervention_rate")} for r in generate["rows"]]
    summary["profile"] = generate.get("profile")
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
print(json.dumps(summary, indent=1))
EOF
echo "total: $(( $(date +%s) - START )) s; results in $OUT_DIR"
[ "$BUILD_RC" -eq 0 ] && [ "$TESTS_RC" -eq 0 ]
