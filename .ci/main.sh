#!/usr/bin/env bash
# CI stage "main": creates .venv, installs torch 2.13.0 (CPU) and the
# package with its test and demo extras (the extension builds once), then
# runs the README's test command, tests/run.sh: ctest on the torch-free
# core (optimised and under ASan/UBSan), then pytest without the slow tests
# (.ci/slow.sh runs those). Any failure, an install included, fails it.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU wheel of torch 2.13.0 is served locally; pin it so nothing pulls
# a multi-GB CUDA build. numpy first too: torch warns at import without it.
python -m pip install -q "torch==2.13.0" numpy
python -m pip install -q ninja cmake setuptools wheel
# The demo extra too (the slow stage's real pair), so the extension builds once.
python -m pip install -q --no-build-isolation -e ".[test,demo]"

python -c "import torch, blendin_ext; print('torch', torch.__version__, '| blendin_ext ops:', torch.ops.blendin_ext.blend_step)"

bash tests/run.sh -q -m "not slow"
