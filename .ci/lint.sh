#!/usr/bin/env bash
# The lint stage: ruff (lint and format check) over the Python files and
# clang-format over the C/C++/CUDA sources, at the versions pinned in
# pyproject.toml's `lint` extra. Fails on any finding, and lists it.
#   bash .ci/lint.sh            # check, with the tools of the active environment
#   bash .ci/lint.sh --install  # pip-install the pinned tools first (CI)
# To fix what it finds:
#   ruff check --fix . && ruff format .
#   git ls-files -z -- '*.h' '*.cpp' '*.cu' '*.cuh' | xargs -0 clang-format -i
set -euo pipefail
cd "$(dirname "$0")/.."

# The pins, from the one place that names them.
pin() { grep -o "\"$1==[^\"]*\"" pyproject.toml | tr -d '"'; }
RUFF=$(pin ruff)
CLANG_FORMAT=$(pin clang-format)
if [ "${1:-}" = "--install" ]; then
  python -m pip install -q "$RUFF" "$CLANG_FORMAT"
fi
for tool in "$RUFF" "$CLANG_FORMAT"; do
  name=${tool%%==*} want=${tool##*==}
  if ! command -v "$name" > /dev/null; then
    echo "FAILED: $name is not installed: pip install '$tool' (or: bash .ci/lint.sh --install)"
    exit 1
  fi
  if ! "$name" --version | grep -qF "$want"; then
    echo "FAILED: $name $want is pinned, found: $("$name" --version) (pip install '$tool')"
    exit 1
  fi
done

status=0
echo "== ruff check"
ruff check . || status=1
echo "== ruff format --check"
ruff format --check . || status=1
echo "== clang-format --dry-run --Werror"
mapfile -d '' sources < <(git ls-files -z -- '*.h' '*.cpp' '*.cu' '*.cuh')
clang-format --dry-run --Werror "${sources[@]}" || status=1
if [ "$status" != 0 ]; then
  echo "FAILED: lint or format findings above (the fix commands are at the top of .ci/lint.sh)"
fi
exit "$status"
