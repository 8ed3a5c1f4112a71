#!/usr/bin/env bash
# The test command of Mega-Taxonomy (README, .ci/run). Sets the machine up, then runs stages:
#
#   release  Ninja, Release, CUDA AUTO (compiled when nvcc exists)     -> build/release
#   asan     RelWithDebInfo with -fsanitize=address,undefined, no CUDA  -> build/asan
#   aarch64  cross build, tests under qemu-aarch64, no CUDA             -> build/aarch64
#   fuzz     libFuzzer targets (clang, ASan+UBSan), 10 s each            -> build/fuzz
#   python   pip wheel + install + pytest (scripts/test-python.sh)       -> build/wheel
#   tidy     clang-tidy over src/, tools/, tests/ (only with --tidy)   -> uses build/release
#
# Every stage runs even when an earlier one failed; the script exits non-zero if any failed.
#
# Usage: bash scripts/test.sh [--quick] [--no-asan] [--no-cross] [--no-fuzz] [--no-python]
#                              [--tidy] [--only STAGE] [--no-setup]
#   --quick       release stage only
#   --no-asan     skip the sanitizer stage
#   --no-cross    skip the aarch64 stage
#   --no-fuzz     skip the fuzz stage
#   --no-python   skip the Python package stage
#   --tidy        add the clang-tidy stage
#   --only STAGE  run that stage alone (release, asan, aarch64, fuzz, python or tidy)
#   --no-setup    do not run scripts/setup.sh
# Environment: MEGATAX_JOBS (build and test parallelism, default 2), MEGATAX_CUDA (release
# stage, default AUTO), CTEST_ARGS (extra ctest arguments, e.g. "-R DType").
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

run_release=1
run_asan=1
run_cross=1
run_fuzz=1
run_python=1
run_tidy=0
run_setup=1
# Prints the comment block at the top of this file.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
while (($# > 0)); do
  case "$1" in
    --quick) run_asan=0; run_cross=0; run_fuzz=0; run_python=0 ;;
    --no-asan) run_asan=0 ;;
    --no-cross) run_cross=0 ;;
    --no-fuzz) run_fuzz=0 ;;
    --no-python) run_python=0 ;;
    --tidy) run_tidy=1 ;;
    --no-setup) run_setup=0 ;;
    --only)
      run_release=0; run_asan=0; run_cross=0; run_fuzz=0; run_python=0; run_tidy=0
      case "${2:-}" in
        release) run_release=1 ;;
        asan) run_asan=1 ;;
        aarch64) run_cross=1 ;;
        fuzz) run_fuzz=1 ;;
        python) run_python=1 ;;
        tidy) run_tidy=1 ;;
        *) echo "test.sh: --only takes release, asan, aarch64, fuzz, python or tidy" >&2; exit 2 ;;
      esac
      shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "test.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

JOBS="${MEGATAX_JOBS:-2}"
read -r -a EXTRA_CTEST_ARGS <<< "${CTEST_ARGS:-}"

# ccache (CMake uses it when found): key on paths relative to the checkout, so that a fresh
# clone in another folder (as CI makes) reuses the objects of earlier builds.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$ROOT}"
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"

# nvcc lives in /usr/local/cuda/bin on the CUDA machines; make AUTO find it even off PATH.
if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="$PATH:/usr/local/cuda/bin"
fi

banner() {
  echo
  echo "=================================================================================="
  echo "== $*"
  echo "=================================================================================="
}

fmt_time() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# configure <build dir> <cmake args...>: a Ninja build tree; an old tree made with another
# generator is reset (its cache only) instead of failing.
configure() {
  local dir="$1"
  shift
  if [[ -f "$dir/CMakeCache.txt" ]] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$dir/CMakeCache.txt"; then
    echo "test.sh: $dir was configured with another generator; resetting its CMake cache"
    rm -rf "$dir/CMakeCache.txt" "$dir/CMakeFiles"
  fi
  cmake -S "$ROOT" -B "$dir" -G Ninja "$@"
}

# run_ctest <build dir>: runs the suite, keeping its output in <build dir>/ctest.log.
run_ctest() {
  local dir="$1"
  ctest --test-dir "$dir" --output-on-failure --no-tests=error -j"$JOBS" \
    "${EXTRA_CTEST_ARGS[@]}" 2>&1 | tee "$dir/ctest.log"
}

stage_release() {
  configure build/release -DCMAKE_BUILD_TYPE=Release -DMEGATAX_CUDA="${MEGATAX_CUDA:-AUTO}" \
    -DMEGATAX_SANITIZE=
  cmake --build build/release -j"$JOBS"
  run_ctest build/release
}

stage_asan() {
  export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:print_stacktrace=1:abort_on_error=0"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
  configure build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMEGATAX_SANITIZE=address,undefined \
    -DMEGATAX_CUDA=OFF
  cmake --build build/asan -j"$JOBS"
  run_ctest build/asan
}

stage_aarch64() {
  configure build/aarch64 -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/toolchain-aarch64-linux-gnu.cmake" -DMEGATAX_CUDA=OFF \
    -DMEGATAX_SANITIZE=
  cmake --build build/aarch64 -j"$JOBS"
  run_ctest build/aarch64
}

stage_fuzz() {
  bash scripts/fuzz.sh "${MEGATAX_FUZZ_SECONDS:-10}"
}

stage_python() {
  bash scripts/test-python.sh
}

stage_tidy() {
  if [[ ! -f build/release/compile_commands.json ]]; then
    configure build/release -DCMAKE_BUILD_TYPE=Release -DMEGATAX_CUDA="${MEGATAX_CUDA:-AUTO}"
  fi
  local tidy_log=build/release/clang-tidy.log
  # Our C++ sources (not .cu files, not GoogleTest); our headers are checked through them.
  local files
  files=$(python3 - "$ROOT" build/release/compile_commands.json <<'EOF_PY'
import json, re, sys
root, db = sys.argv[1], sys.argv[2]
pattern = re.compile(re.escape(root) + r"/(src|tools|tests)/.*\.cc$")
print("\n".join(sorted({e["file"] for e in json.load(open(db)) if pattern.match(e["file"])})))
EOF_PY
)
  echo "clang-tidy: $(wc -l <<< "$files") files, config $ROOT/.clang-tidy"
  local status=0
  xargs -r -n 1 -P "$JOBS" clang-tidy -p build/release --quiet \
    --header-filter="^$ROOT/(include|src|tools)/" \
    --extra-arg=-Wno-unknown-warning-option --extra-arg=-Wno-unused-command-line-argument \
    <<< "$files" > "$tidy_log" 2>&1 || status=$?
  # Each header's findings repeat once per file that includes it: print them once.
  local findings
  findings=$(grep -E '^/.*:[0-9]+:[0-9]+: (warning|error):' "$tidy_log" | sort -u || true)
  [[ -n "$findings" ]] && echo "$findings"
  local count=0
  [[ -n "$findings" ]] && count=$(wc -l <<< "$findings")
  echo "clang-tidy: $count distinct findings (full output: $tidy_log)"
  [[ $status -eq 0 && $count -eq 0 ]]
}

# ---- run -------------------------------------------------------------------------------------
names=()
results=()
total_passed=0
total_failed=0
any_failed=0
start_all=$SECONDS

if ((run_setup)); then
  banner "setup: scripts/setup.sh"
  if ! bash scripts/setup.sh; then
    echo "test.sh: setup failed" >&2
    exit 1
  fi
fi

# run_stage <name> <build dir or ''> <description>
run_stage() {
  local name="$1" dir="$2" what="$3"
  banner "stage $name: $what"
  local t0=$SECONDS
  (
    set -e
    "stage_$name"
  )
  local rc=$?
  local dt=$((SECONDS - t0))
  local counts=""
  if [[ -n "$dir" && -f "$dir/ctest.log" ]]; then
    local line total failed
    line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$dir/ctest.log" | tail -n 1)
    if [[ -n "$line" ]]; then
      failed=$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<< "$line")
      total=$(sed -E 's/.*failed out of ([0-9]+).*/\1/' <<< "$line")
      counts=", tests: $((total - failed)) passed, $failed failed"
      total_passed=$((total_passed + total - failed))
      total_failed=$((total_failed + failed))
    fi
  fi
  local verdict="PASS"
  if ((rc != 0)); then
    verdict="FAIL"
    any_failed=1
  fi
  names+=("$name")
  results+=("$verdict in $(fmt_time "$dt")$counts")
  echo "== stage $name: $verdict in $(fmt_time "$dt")$counts"
}

# A stale log from an earlier run must not be counted if this run fails before ctest.
rm -f build/release/ctest.log build/asan/ctest.log build/aarch64/ctest.log

if ((run_release)); then
  run_stage release build/release "Release build (CUDA ${MEGATAX_CUDA:-AUTO}) + ctest"
fi
if ((run_asan)); then
  run_stage asan build/asan "AddressSanitizer + UBSan build (RelWithDebInfo) + ctest"
fi
if ((run_cross)); then
  run_stage aarch64 build/aarch64 "aarch64 cross build + ctest under qemu-aarch64"
fi
if ((run_fuzz)); then
  run_stage fuzz "" "libFuzzer on the npy/fbin/fvecs readers (${MEGATAX_FUZZ_SECONDS:-10} s each)"
fi
if ((run_python)); then
  run_stage python "" "Python package: wheel, install, pytest"
fi
if ((run_tidy)); then
  run_stage tidy "" "clang-tidy over src/, tools/ and tests/"
fi

banner "summary ($(fmt_time $((SECONDS - start_all))) in all)"
for i in "${!names[@]}"; do
  printf '%-8s %s\n' "${names[$i]}" "${results[$i]}"
done
if ((any_failed)); then
  echo "test.sh: FAILED (see the stages above)"
else
  echo "test.sh: all stages passed"
fi
# Last line: the tests counted by ctest over all stages run.
echo "tests: $total_passed passed, $total_failed failed"
exit "$any_failed"
