#!/usr/bin/env bash
# bench/cuda/mpi_gpu_fit.sh -- the distributed GPU fit (issue 4, GPU part): one MPI rank per
# GPU, `megatax fit --device "${DEVICE:-cuda}"` on 1 rank and on R ranks over the same generated data;
# prints each run's per-level table and per-rank log, the speedup, and whether the two runs
# wrote byte-identical models and outputs (they must: the tree does not depend on the rank
# count); then the same for `megatax predict` on 1 and R ranks.
#
#   bench/cuda/mpi_gpu_fit.sh MEGATAX N D LEVELS BRANCHING [RANKS] [SHARDS]
# MEGATAX must be built with MPI and CUDA. Environment: WORK (/tmp/megatax_mpi_gpu_fit),
# BATCH_ROWS (1048576), GPU_DTYPE (auto), DEVICE (cuda; cpu to try the script without a GPU),
# PREDICT (1: then `megatax predict` with the 1-rank model on 1 and on R ranks, outputs compared).
set -euo pipefail
MEGATAX=$1 N=$2 D=$3 LEVELS=$4 B=$5 RANKS=${6:-2} SHARDS=${7:-32}
WORK=${WORK:-/tmp/megatax_mpi_gpu_fit}
BATCH=${BATCH_ROWS:-1048576}
GPU_ARGS=()
[ "${DEVICE:-cuda}" = cuda ] && GPU_ARGS=(--gpu-dtype "${GPU_DTYPE:-auto}")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rm -rf "$WORK"; mkdir -p "$WORK"
"$MEGATAX" gen --out "$WORK/data" --n "$N" --dim "$D" --levels "$LEVELS" --branching "$B" \
  --shards "$SHARDS" --dtype f16 --seed 1 >/dev/null
cat "$WORK"/data/part-*.npy >/dev/null  # page cache warm for both runs
fit() {
  local ranks=$1
  echo "---- $ranks rank(s): megatax fit --device "${DEVICE:-cuda}" --gpu-dtype ${GPU_DTYPE:-auto} (levels $LEVELS x $B) ----"
  local t0 t1
  t0=$(date +%s.%N)
  if [ "$ranks" -eq 1 ]; then
    "$MEGATAX" fit --input "$WORK/data/part-*.npy" --storage "$WORK/m$ranks" --output "$WORK/o$ranks" \
      --levels "$LEVELS" --branching "$B" --batch-rows "$BATCH" --device "${DEVICE:-cuda}" \
      ${GPU_ARGS[@]+"${GPU_ARGS[@]}"} --executor local 2>&1 | tee "$WORK/log$ranks" \
      | grep -v '^\s*$' | grep -v 'assigning\|training\|level [0-9]*/[0-9]*: ' || true
  else
    mpirun -np "$ranks" --oversubscribe --bind-to none "$MEGATAX" fit --input "$WORK/data/part-*.npy" \
      --storage "$WORK/m$ranks" --output "$WORK/o$ranks" --levels "$LEVELS" --branching "$B" \
      --batch-rows "$BATCH" --device "${DEVICE:-cuda}" ${GPU_ARGS[@]+"${GPU_ARGS[@]}"} --executor mpi 2>&1 \
      | tee "$WORK/log$ranks" | grep -v '^\s*$' | grep -v 'assigning\|training' || true
  fi
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" -v r="$ranks" 'BEGIN { printf "mpi_gpu_fit: %d rank(s): %.2f s wall\n", r, b - a }' | tee -a "$WORK/walls"
}
fit 1
fit "$RANKS"
fit_s() { sed -n 's/^fit: [0-9]* points, \([0-9.]*\) s.*/\1/p' "$WORK/log$1"; }
awk -v a="$(fit_s 1)" -v b="$(fit_s "$RANKS")" -v r="$RANKS" \
  'BEGIN { printf "mpi_gpu_fit: fit seconds 1 rank %.2f, %d ranks %.2f: speedup %.2fx\n", a, r, b, a / b }'
awk '{ w[NR] = $(NF-2) } END { printf "mpi_gpu_fit: wall (with mpirun start) speedup %d ranks vs 1: %.2fx\n", '"$RANKS"', w[1] / w[2] }' "$WORK/walls"
same=yes
for f in $(cd "$WORK/m1" && find . -type f ! -name taxonomy.json | sort) $(cd "$WORK/o1" && find . -type f | sed 's|^|OUT/|' | sort); do
  case "$f" in
    OUT/*) cmp -s "$WORK/o1/${f#OUT/}" "$WORK/o$RANKS/${f#OUT/}" || { same=no; echo "differs: output ${f#OUT/}"; } ;;
    *) cmp -s "$WORK/m1/$f" "$WORK/m$RANKS/$f" || { same=no; echo "differs: model $f"; } ;;
  esac
done
echo "mpi_gpu_fit: 1 rank vs $RANKS ranks byte-identical models and outputs: $same"

# Predict (PREDICT=0 skips it): the 1-rank model over the same shards, on 1 rank and under
# mpirun on R ranks (each on its local GPU): the outputs must be byte-identical too.
if [ "${PREDICT:-1}" = 1 ]; then
  predict() {
    local ranks=$1 t0 t1
    t0=$(date +%s.%N)
    if [ "$ranks" -eq 1 ]; then
      "$MEGATAX" predict --storage "$WORK/m1" --input "$WORK/data/part-*.npy" --output "$WORK/p1" \
        --device "${DEVICE:-cuda}" ${GPU_ARGS[@]+"${GPU_ARGS[@]}"} --executor local --quiet
    else
      mpirun -np "$ranks" --oversubscribe --bind-to none "$MEGATAX" predict --storage "$WORK/m1" \
        --input "$WORK/data/part-*.npy" --output "$WORK/p$ranks" --device "${DEVICE:-cuda}" \
        ${GPU_ARGS[@]+"${GPU_ARGS[@]}"} --executor mpi --quiet
    fi
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" -v r="$ranks" \
      'BEGIN { printf "mpi_gpu_fit: predict, %d rank(s): %.2f s wall (with the process start)\n", r, b - a }'
  }
  predict 1
  predict "$RANKS"
  psame=yes
  n1=$(cd "$WORK/p1" && find . -type f | wc -l); nr=$(cd "$WORK/p$RANKS" && find . -type f | wc -l)
  [ "$n1" = "$nr" ] && [ "$n1" -gt 0 ] || { psame=no; echo "predict wrote $n1 vs $nr files"; }
  for f in $(cd "$WORK/p1" && find . -type f | sort); do
    cmp -s "$WORK/p1/$f" "$WORK/p$RANKS/$f" || { psame=no; echo "differs: predict output $f"; }
  done
  echo "mpi_gpu_fit: predict 1 rank vs $RANKS ranks byte-identical outputs ($n1 files): $psame"
  # Context, not a check: how many rows the predict puts where the fit's last pass did.
  python3 - "$WORK/o1" "$WORK/p1" <<'PY' || true
import glob, os, sys
import numpy as np
fit_dir, pred_dir = sys.argv[1], sys.argv[2]
same = total = 0
for f in sorted(glob.glob(os.path.join(pred_dir, "*.paths.npy"))):
    a = np.load(f)
    b = np.load(os.path.join(fit_dir, os.path.basename(f)))
    same += int(np.all(a == b, axis=1).sum())
    total += a.shape[0]
print(f"mpi_gpu_fit: predict paths equal to the fit's: {same} of {total} rows")
PY
fi
rm -rf "$WORK"
