#!/usr/bin/env bash
# bench/cuda/ab_assign.sh -- side-by-side timing of the assign kernels of two source trees on
# one GPU: the working tree against a base (a `git archive` tarball), built the same way,
# run alternately (base, new, base, new...) so that clock and thermal drift hit both alike.
# Kernel changes are judged on these ratios, not on numbers from different runs.
#
#   here:        git archive -o build/ab-base.tar <base-rev>
#   GPU machine: bench/cuda/ab_assign.sh build/ab-base.tar [rounds]   (carry build/ab-base.tar)
# Prints each run's "assign" lines of bench_cuda (--only assign) and a per-shape summary.
set -euo pipefail
cd "$(dirname "$0")/../.."
base_tar=${1:?usage: $0 BASE_TARBALL [ROUNDS]}
rounds=${2:-3}
ARCH=${CUDA_ARCH:-90}
JOBS=${JOBS:-16}
export PATH=/usr/local/cuda/bin:$PATH
base_src=$(mktemp -d /tmp/ab-base.XXXXXX)
trap 'rm -rf "$base_src"' EXIT
tar -xf "$base_tar" -C "$base_src"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
build() {  # build SRC DIR
  cmake -S "$1" -B "$2" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DMEGATAX_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DMEGATAX_ARROW=OFF -DMEGATAX_BUILD_TESTS=OFF \
    -DMEGATAX_BUILD_TOOLS=OFF -DMEGATAX_BUILD_PYTHON=OFF -DMEGATAX_MPI=OFF \
    -DMEGATAX_GPU_TESTS=ON >/dev/null
  cmake --build "$2" -j"$JOBS" --target bench_cuda >/dev/null
}
build "$base_src" "$base_src/build" &
build . "${BUILD_DIR:-build/gpu}"
wait
summary=$(mktemp)
for r in $(seq 1 "$rounds"); do
  for side in base new; do
    bin=$([ "$side" = base ] && echo "$base_src/build/bench/cuda/bench_cuda" ||
          echo "${BUILD_DIR:-build/gpu}/bench/cuda/bench_cuda")
    "$bin" --only assign --no-f32 2>&1 | grep -E "^  (bf16|f16|f32) N=" | grep "ours" |
      sed "s/^/$side round $r: /" | tee -a "$summary"
  done
done
echo
echo "==== ab_assign summary: TFLOP/s per run (base | new) ===="
for shape in "bf16 N=4M K=1K" "f16 N=4M K=1K" "bf16 N=1M K=16K"; do
  b=$(grep "^base" "$summary" | grep "$shape" | grep -o '[0-9]* TFLOP/s' | awk '{printf "%s ", $1}')
  n=$(grep "^new" "$summary" | grep "$shape" | grep -o '[0-9]* TFLOP/s' | awk '{printf "%s ", $1}')
  echo "$shape: base $b| new $n"
done
rm -f "$summary"
