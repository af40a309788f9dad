#!/usr/bin/env bash
# The vLLM plug-in's contract tests against vLLM 0.33.0 (Model Runner V2's
# logits-processor loader, validator, RequestState and LogitsContext), on
# the CPU: vLLM's GPU wheel installed without its dependencies in a side
# venv, beside the pinned CPU torch and the pure-Python packages the
# modules the tests import need. Strict: any failed install fails.
#   bash .ci/vllm_contract.sh            (venv: .venv-vllm033, or $VENV)
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
VENV=${VENV:-.venv-vllm033}
python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
# The local CPU wheel of torch 2.13.0 (vLLM 0.33 pins 2.14, a multi-GB CUDA
# build that the tests do not need: the contract is pure Python).
"$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q --no-deps "vllm==0.33.0"
# What vllm.v1.worker.gpu.sample.logits_processor, vllm.v1.worker.gpu.states,
# vllm.SamplingParams and the V1 processor interface import; transformers in
# vLLM 0.33's range.
"$PY" -m pip install -q packaging msgspec pydantic regex cbor2 psutil pyzmq openai pillow \
  urllib3 requests aiohttp openai-harmony cloudpickle pybase64 cachetools uvloop py-cpuinfo \
  "transformers>=5.16.1,<5.21.0" numpy pytest setuptools wheel ninja
MAX_JOBS=2 "$PY" -m pip install -q --no-deps --no-build-isolation -e .
"$PY" -c "import vllm, torch; print('vllm', vllm.__version__, '| torch', torch.__version__)"
"$PY" -m pytest -q -p no:cacheprovider tests/vllm/test_mrv2_contract.py \
  tests/vllm/test_processor_interfaces.py
echo "vllm_contract.sh: $((SECONDS - started)) s"
