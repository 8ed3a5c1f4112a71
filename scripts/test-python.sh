#!/usr/bin/env bash
# The Python package's test stage: installs the pinned build and test requirements, builds
# the mega_taxonomy wheel from this checkout (scikit-build-core driving CMake in build/wheel,
# ccache-friendly), installs it into the current Python and runs pytest on tests/python.
#
# Usage: bash scripts/test-python.sh [pytest args...]
# Environment: PYTHON (default python3), MEGATAX_JOBS (build parallelism, default 2).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
PYTHON="${PYTHON:-python3}"
export CMAKE_BUILD_PARALLEL_LEVEL="${MEGATAX_JOBS:-2}"
# ccache (CMake uses it when found): key on paths relative to the checkout (as test.sh).
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$ROOT}"
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"

pip_args=(--disable-pip-version-check --no-input)
install_args=(--root-user-action=ignore)
# Debian's python3 is "externally managed" (PEP 668); the pins are exact wheels (setup.sh).
if "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'
then
  install_args+=(--break-system-packages)
fi

t0=$SECONDS
echo "test-python: requirements"
"$PYTHON" -m pip install "${pip_args[@]}" "${install_args[@]}" --quiet -r requirements.txt

echo "test-python: building the wheel (build/wheel -> build/wheelhouse)"
mkdir -p build
rm -f build/wheelhouse/mega_taxonomy-*.whl
# No build isolation: the build requirements (scikit-build-core, pybind11) are the pinned
# ones just installed, so nothing is downloaded per build and build/wheel stays valid.
"$PYTHON" -m pip wheel "${pip_args[@]}" --no-build-isolation --no-deps \
  -w build/wheelhouse . > build/wheel-build.log 2>&1 || {
  tail -n 60 build/wheel-build.log
  echo "test-python: wheel build failed (full log: build/wheel-build.log)" >&2
  exit 1
}
wheel=$(ls build/wheelhouse/mega_taxonomy-*.whl)
echo "test-python: built $wheel in $((SECONDS - t0)) s"

"$PYTHON" -m pip install "${pip_args[@]}" "${install_args[@]}" --quiet --force-reinstall --no-deps "$wheel"

echo "test-python: pytest tests/python"
MEGATAX_WHEEL="$ROOT/$wheel" "$PYTHON" -m pytest -q tests/python "$@"
echo "test-python: done in $((SECONDS - t0)) s"
