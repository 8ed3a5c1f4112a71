#!/usr/bin/env bash
# scripts/gpu-check.sh -- everything the CUDA backend needs checked on a GPU machine, in one go:
#   1. the GPU (nvidia-smi)
#   2. a fresh CUDA build of the test and benchmark binaries only (build/gpu)
#   3. the GPU tests (cuda_kernels_test: CPU float64 reference, fresh random seed;
#      cuda_engine_test: the whole fit on the GPU against the CPU engine; cuda_index_test;
#      the top-k cases again with the union bound forced at every k)
#   4. compute-sanitizer memcheck on the small case of the same tests
#   5. bench_cuda (ours vs cuBLAS and HBM on this card) and, if PyTorch imports,
#      bench/cuda/torch_peer.py (PyTorch's matmul + argmin / topk on the same shapes);
#      bench/cuda/gpu_fit.sh (megatax fit --device cuda vs --device cpu, same data);
#      bench/cuda/gpu_predict.sh (megatax predict --device cuda vs the CPU's, same model);
#      bench_indexflat --backend cuda (and, with two or more GPUs, sharded over all of them),
#      beside bench/cuda/torch_indexflat_peer.py (PyTorch through the same host-to-host flow);
#      bench/cuda/flash_kmeans_peer.py when third_party/flash-kmeans was fetched and carried
#   6. a short table
# Exit status: non-zero if the build, a test or the sanitizer failed (benchmarks only report).
# Logs go to $OUT (the device tool's output folder) when set, else build/gpu/logs.
#
#   scripts/gpu-check.sh [--no-bench] [--no-tests] [--no-torch] [--seed S]
# (--no-tests: the build and the benchmarks only, e.g. a second call on a warm machine whose
# first ran the tests.)
# Environment: BUILD_DIR (default build/gpu), CUDA_ARCH (default 90), JOBS (default 16),
#   MPI (default OFF: -DMEGATAX_MPI), FIT_N / FIT_D / FIT_LEVELS / FIT_B (gpu_fit.sh shape),
#   PREDICT_N (gpu_predict.sh rows, default 2M; D = FIT_D, model 3 x 30),
#   GPU_FIT=0 skips gpu_fit.sh.
# Budget: ~1-2 min build on 16 cores, ~1 min tests, < 1 min sanitizer, ~1-2 min benchmarks.
set -u -o pipefail
cd "$(dirname "$0")/.."

bench=1
tests=1
torch_peer=1
seed_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-bench) bench=0 ;;
    --no-tests) tests=0 ;;
    --no-torch) torch_peer=0 ;;
    --seed) seed_args=(--seed "$2"); shift ;;
    *) echo "usage: $0 [--no-bench] [--no-tests] [--no-torch] [--seed S]" >&2; exit 2 ;;
  esac
  shift
done

BUILD=${BUILD_DIR:-build/gpu}
ARCH=${CUDA_ARCH:-90}
JOBS=${JOBS:-16}
LOGS=${OUT:-$BUILD/logs}
mkdir -p "$LOGS"
export PATH=/usr/local/cuda/bin:$PATH
t_start=$(date +%s)
status=0
declare -a summary

stamp() { echo "[gpu-check +$(( $(date +%s) - t_start ))s] $*"; }
note() { summary+=("$(printf '%-34s %s' "$1" "$2")"); }

stamp "GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || {
  echo "gpu-check: nvidia-smi failed: no GPU here?"; exit 1; }
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)

# ---- build --------------------------------------------------------------------------------
stamp "configure + build ($BUILD, sm_$ARCH, -j$JOBS)"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
# The kernel test and benchmark need the CUDA backend only; the engine test and the CLI the
# CPU library too (no GoogleTest, Arrow or Python needed).
if ! cmake -S . -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
      -DMEGATAX_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DMEGATAX_ARROW=OFF \
      -DMEGATAX_BUILD_TESTS=OFF -DMEGATAX_BUILD_TOOLS=ON -DMEGATAX_BUILD_PYTHON=OFF \
      -DMEGATAX_MPI="${MPI:-OFF}" -DMEGATAX_GPU_TESTS=ON >"$LOGS/configure.log" 2>&1; then
  tail -30 "$LOGS/configure.log"; echo "gpu-check: configure FAILED"; exit 1
fi
if ! cmake --build "$BUILD" -j"$JOBS" --target cuda_kernels_test bench_cuda cuda_engine_test \
      cuda_index_test megatax_cli bench_indexflat bench_predict_rows bench_pinned bench_register bench_read_pass >"$LOGS/build.log" 2>&1; then
  grep -E "error|Error" "$LOGS/build.log" | head -40; echo "gpu-check: build FAILED"; exit 1
fi
note "build (sm_$ARCH)" "ok, $(( $(date +%s) - t_start ))s after start"
TEST=$BUILD/tests/cuda/cuda_kernels_test
ENGINE_TEST=$BUILD/tests/cuda/cuda_engine_test
INDEX_TEST=$BUILD/tests/cuda/cuda_index_test
CLI=$BUILD/tools/megatax
BENCH=$BUILD/bench/cuda/bench_cuda

# ---- tests --------------------------------------------------------------------------------
# run_gpu_test NAME BINARY LOG TIMEOUT [ARGS...]: runs a GPU test (fresh seed unless --seed),
# notes PASS with its count of "[ ok ]" lines (and seed), or FAIL and sets the exit status.
run_gpu_test() {
  local name=$1 bin=$2 log=$3 limit=$4
  shift 4
  stamp "$name"
  timeout "$limit" "$bin" "$@" "${seed_args[@]}" 2>&1 | tee "$LOGS/$log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then
    note "$name" "PASS ($(grep -c '^\s*\[ ok \]' "$LOGS/$log") checks, $(grep -o 'seed [0-9]*' "$LOGS/$log" | head -1))"
  else
    status=1
    note "$name" "FAIL (exit $rc; see $log)"
  fi
}
if [ "$tests" -eq 1 ]; then
  run_gpu_test cuda_kernels_test "$TEST" test.log 300
  run_gpu_test cuda_engine_test "$ENGINE_TEST" engine_test.log 600
  run_gpu_test cuda_index_test "$INDEX_TEST" index_test.log 300
  # The top-k's union bound at every k (by default only below k = 32; MEGATAX_TOPK_BOUND=union
  # forces it): the override stays correct.
  run_gpu_test "top-k, union bound at every k" env topk_union.log 200 MEGATAX_TOPK_BOUND=union "$TEST" --topk-only
  # The top-k's seeded bound (the kernel first run over the database's first tiles) forced on
  # every launch: by default only chunks of 64 tiles or more are seeded, beyond the test shapes.
  run_gpu_test "top-k, seeded bound forced" env topk_seed.log 200 MEGATAX_TOPK_SEED=force "$TEST" --topk-only

  # ---- sanitizer --------------------------------------------------------------------------
  stamp "compute-sanitizer --tool memcheck (small case)"
  if command -v compute-sanitizer >/dev/null 2>&1; then
    timeout 300 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 99 \
      "$TEST" --small "${seed_args[@]}" 2>&1 | tee "$LOGS/sanitizer.log"
    rc=${PIPESTATUS[0]}
    errs=$(grep -o 'ERROR SUMMARY: [0-9]* error' "$LOGS/sanitizer.log" | tail -1)
    if [ "$rc" -eq 0 ]; then
      note "compute-sanitizer memcheck" "clean (${errs:-no summary})"
    else
      status=1
      note "compute-sanitizer memcheck" "FAIL (exit $rc, ${errs:-no summary})"
    fi
  else
    status=1
    note "compute-sanitizer memcheck" "FAIL (compute-sanitizer not found)"
  fi
else
  note "GPU tests" "not run (--no-tests)"
fi

# ---- benchmarks ---------------------------------------------------------------------------
if [ "$bench" -eq 1 ]; then
  stamp "bench_cuda"
  timeout 300 "$BENCH" 2>&1 | tee "$LOGS/bench.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] && note "bench_cuda" "ok" || note "bench_cuda" "FAILED (see bench.log)"
  if [ "$torch_peer" -eq 1 ] && python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    stamp "torch_peer.py"
    PYTHONUNBUFFERED=1 timeout 300 python3 bench/cuda/torch_peer.py 2>&1 | tee "$LOGS/torch_peer.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] && note "torch_peer.py" "ok" || note "torch_peer.py" "FAILED (see torch_peer.log)"
  else
    note "torch_peer.py" "skipped (no PyTorch with CUDA, or --no-torch)"
  fi
  # Flash-KMeans (Triton) as a peer, when its folder was fetched into third_party/ and carried.
  if [ "$torch_peer" -eq 1 ] && [ -d third_party/flash-kmeans/flash_kmeans ]; then
    stamp "flash_kmeans_peer.py"
    PYTHONUNBUFFERED=1 timeout 300 python3 bench/cuda/flash_kmeans_peer.py 2>&1 | tee "$LOGS/flash_kmeans.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] && note "flash_kmeans_peer.py" "ok" || note "flash_kmeans_peer.py" "FAILED (see flash_kmeans.log)"
  else
    note "flash_kmeans_peer.py" "skipped (no third_party/flash-kmeans: see the script's header)"
  fi
  stamp "bench_indexflat --backend cuda (end to end: queries in, results out; database resident)"
  for shape in "2000000 1024" "10000000 128"; do
    set -- $shape
    for q in 1024 16; do
      for dt in bf16 fp32; do
        # --device-warmup 1: the process's CUDA context timed apart; "first search" is then
        # the database's copy to the device.
        line=$("$BUILD/tools/bench_indexflat" --backend cuda --n "$1" --d "$2" --q "$q" --k 10 \
          --dtype "$dt" --iters 5 --device-warmup 1 2>&1 | grep -oE 'device warm-up: [0-9.]+ ms|add: [0-9.]+ ms|first search: [0-9.]+ ms|search: avg [0-9.]+ ms, min [0-9.]+ ms' | paste -sd ';' -)
        echo "indexflat cuda $dt n=$1 d=$2 q=$q k=10: $line" | tee -a "$LOGS/indexflat.log"
      done
      # PyTorch through the same flow (host f32 queries in, host results out), bf16.
      if [ "$torch_peer" = 1 ] && python3 -c "import torch" >/dev/null 2>&1; then
        line=$(timeout 120 python3 bench/cuda/torch_indexflat_peer.py --n "$1" --d "$2" --q "$q" --k 10 \
          --dtype bf16 --iters 5 2>&1 | grep -E 'RESULT|rror' | tail -1)
        echo "indexflat torch bf16 n=$1 d=$2 q=$q k=10: $line" | tee -a "$LOGS/indexflat.log"
      fi
    done
  done
  # The database sharded over every GPU (SearchOptions::devices), beside GPU 0 alone.
  gpus=$(nvidia-smi -L | grep -c '^GPU ')
  if [ "$gpus" -ge 2 ]; then
    all=$(seq -s, 0 $((gpus - 1)))
    for k in 10 100; do
      for devices in 0 "$all"; do
        line=$("$BUILD/tools/bench_indexflat" --backend cuda --devices "$devices" --n 2000000 \
          --d 1024 --q 1024 --k "$k" --dtype bf16 --iters 10 --warmup 2 2>&1 | grep -E 'ms|search' | tail -1)
        echo "indexflat cuda bf16 n=2000000 d=1024 q=1024 k=$k devices=$devices: $line" | tee -a "$LOGS/indexflat.log"
      done
    done
  fi
  stamp "gpu_predict.sh"
  ROWS_BENCH=$BUILD/bench/cuda/bench_predict_rows \
    timeout 300 bench/cuda/gpu_predict.sh "$CLI" "${PREDICT_N:-2000000}" "${FIT_D:-1024}" 3 30 2>&1 | tee "$LOGS/gpu_predict.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] && note "gpu_predict.sh" "ok" || note "gpu_predict.sh" "FAILED (see gpu_predict.log)"
  if [ "${GPU_FIT:-1}" = 1 ]; then
    stamp "gpu_fit.sh"
    CPU_TOO=1 timeout 400 bench/cuda/gpu_fit.sh "$CLI" "${FIT_N:-2000000}" "${FIT_D:-1024}" \
      "${FIT_LEVELS:-2}" "${FIT_B:-100}" 2>&1 | tee "$LOGS/gpu_fit.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] && note "gpu_fit.sh" "ok" || note "gpu_fit.sh" "FAILED (see gpu_fit.log)"
  fi
fi

# ---- table --------------------------------------------------------------------------------
echo
echo "==================== gpu-check: $gpu, $(( $(date +%s) - t_start ))s ===================="
for line in "${summary[@]}"; do echo "$line"; done
if [ -f "$LOGS/indexflat.log" ]; then
  echo
  cat "$LOGS/indexflat.log"
fi
if [ -f "$LOGS/gpu_fit.log" ]; then
  echo
  grep -E '^(gpu_fit|----|level|[0-9]+ |fit:|peak)' "$LOGS/gpu_fit.log"
fi
for f in bench torch_peer flash_kmeans gpu_predict; do
  if [ -f "$LOGS/$f.log" ]; then
    echo
    sed -n '/^==== .* summary/,$p' "$LOGS/$f.log"
  fi
done
echo
if [ "$status" -eq 0 ]; then echo "gpu-check: PASS"; else echo "gpu-check: FAIL"; fi
exit "$status"
