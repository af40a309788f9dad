#!/usr/bin/env bash
# The project's test command (README "Tests"): the C++ core under ctest, then
# the Python suite under pytest. Run from the repository root inside the
# environment where blendin_ext is installed. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== ctest: torch-free core"
cmake -S . -B build/core -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build/core
(cd build/core && ctest --output-on-failure)

echo "== pytest"
python -m pytest "$@"
