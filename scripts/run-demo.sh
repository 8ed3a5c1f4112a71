#!/usr/bin/env bash
# The demo (README's first command): sets the machine up, builds the release tree and runs the
# main job on its built-in default: `megatax demo` generates a hierarchical dataset, fits a
# 3-level taxonomy on it, reports how well the planted hierarchy was recovered and prints
# `megatax info`.
#
# Usage: bash scripts/run-demo.sh [arguments passed to the demo program]
# Environment: MEGATAX_JOBS (build parallelism, default 2), MEGATAX_CUDA (default AUTO).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
JOBS="${MEGATAX_JOBS:-2}"

if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="$PATH:/usr/local/cuda/bin"
fi

echo "== run-demo: setup"
bash scripts/setup.sh

echo "== run-demo: building build/release"
if [[ -f build/release/CMakeCache.txt ]] &&
   ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' build/release/CMakeCache.txt; then
  rm -rf build/release/CMakeCache.txt build/release/CMakeFiles
fi
cmake -S "$ROOT" -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DMEGATAX_CUDA="${MEGATAX_CUDA:-AUTO}" -DMEGATAX_SANITIZE=
cmake --build build/release -j"$JOBS" --target megatax_cli

echo "== run-demo: build/release/tools/megatax demo $*"
exec build/release/tools/megatax demo "$@"
