#!/usr/bin/env bash
# The README's main command: install what is missing, build the release preset, run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --workflow --preset release
./build/release/seqlab compare configs/etth1_compare.toml
