#!/usr/bin/env bash
# The README's test command: install what is missing, build the release preset, run every test.
# Extra arguments go to ctest (for example -R autograd).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release
cmake --build --preset release
ctest --preset release "$@"
