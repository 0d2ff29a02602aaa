#!/usr/bin/env bash
# Installs what seqlab needs to build, from Debian 12 packages only. Idempotent: installs nothing
# (and skips apt-get update) when every package is already present. Runs apt as root or via sudo.
set -euo pipefail

packages=(
  g++ cmake ninja-build pkg-config
  libtbb-dev          # oneTBB: the one thread pool
  libcli11-dev        # the seqlab command line
  libspdlog-dev       # logging
  libhdf5-dev         # metrics and checkpoints
  doctest-dev         # tests
  libopenblas-dev     # GEMM (pthread variant)
  libtoml11-dev       # configs
  clang               # CI: the libFuzzer targets (scripts/fuzz.sh)
  libclang-rt-14-dev  # libFuzzer and clang's sanitizer runtimes (clang only recommends it)
  libopenmpi-dev openmpi-bin  # data-parallel training and distributed compare (mpirun)
)

# CI (SEQLAB_PYTHON_TESTS=1): PyTorch and h5py for the round-trip tests of scripts/to_pytorch.py
# (label python; about 75 MiB to download). Without them those tests report "Skipped".
if [ "${SEQLAB_PYTHON_TESTS:-0}" = 1 ]; then
  packages+=(python3-torch python3-h5py)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
