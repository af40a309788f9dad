#!/usr/bin/env bash
# The project's test command (README "Tests"): the C++ core under ctest (an
# optimised build, then an ASan/UBSan build), then the Python suite under
# pytest. Run from the repository root inside the environment where
# blendin_ext is installed. Extra arguments go to pytest.
# BLENDIN_SANITIZE_TESTS=0 skips the sanitizer build (it needs the compiler's
# ASan/UBSan runtimes; without them its configure step stops with the fix).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== ctest: torch-free core"
cmake -S . -B build/core -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build/core
(cd build/core && ctest --output-on-failure)

if [ "${BLENDIN_SANITIZE_TESTS:-1}" = "1" ]; then
  # One CPU variant (the others are the same source with wider -m flags; the
  # build above compares their outputs byte for byte), -O1: about a minute.
  echo "== ctest: torch-free core under ASan + UBSan"
  cmake -S . -B build/core-sanitize -G Ninja -DCMAKE_BUILD_TYPE=Debug -DBLENDIN_SANITIZE=ON \
        -DBLENDIN_CPU_ARCH=generic > /dev/null
  cmake --build build/core-sanitize
  (cd build/core-sanitize && ctest --output-on-failure)
fi

echo "== pytest"
python -m pytest "$@"
