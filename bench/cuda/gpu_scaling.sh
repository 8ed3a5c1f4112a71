#!/usr/bin/env bash
# bench/cuda/gpu_scaling.sh -- strong scaling of the GPU fit over 1..R GPUs of one host (one
# MPI rank per GPU, issue 9): the same N x D f16 data (numpy normal noise, generated on the
# machine in parallel, 1 shard per 125k rows), `megatax fit --device cuda` with each rank
# count; prints per-run fit seconds, points*level/s per GPU, speedup and efficiency vs 1 GPU,
# and whether every run wrote the same model and outputs as the 1-GPU run.
#
# Weak scaling (SCALING=weak): N is per GPU; R GPUs fit the first N * R rows (the data is
# generated once, for the largest R), so the trees differ between runs and efficiency is
# the 1-GPU time over the R-GPU time.
#
#   bench/cuda/gpu_scaling.sh MEGATAX N D LEVELS BRANCHING "1 2 4"
# MEGATAX must be built with MPI and CUDA. Environment: WORK (/tmp/megatax_gpu_scaling),
# SCALING (strong | weak), KEEP=1 keeps the generated data for a following call,
# ONE_GPU_EXECUTOR=mpi runs the 1-GPU fit under mpirun too (default: the local executor).
set -euo pipefail
MEGATAX=$1 N=$2 D=$3 LEVELS=$4 B=$5 RANKS=${6:-"1 2 4"}
WORK=${WORK:-/tmp/megatax_gpu_scaling}
SCALING=${SCALING:-strong}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rows=125000
if [ "$SCALING" = weak ] && [ $((N % rows)) != 0 ]; then
  echo "gpu_scaling: weak scaling needs N per GPU a multiple of $rows (whole shards)" >&2; exit 2
fi
max_r=1; for r in $RANKS; do [ "$r" -gt "$max_r" ] && max_r=$r; done
total=$N; [ "$SCALING" = weak ] && total=$((N * max_r))
rm -rf "$WORK"/m* "$WORK"/o* "$WORK"/in* "$WORK"/log* "$WORK"/table
if [ ! -f "$WORK/data/done-$total-$D" ]; then
rm -rf "$WORK"; mkdir -p "$WORK/data"
t0=$(date +%s.%N)
python3 - "$WORK/data" "$total" "$D" <<'PY'
import sys, numpy as np
from concurrent.futures import ThreadPoolExecutor
out, n, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = 125000
def shard(s):
    r = min(rows, n - s * rows)
    x = np.random.default_rng(s).standard_normal((r, d), dtype=np.float32).astype(np.float16)
    np.save(f"{out}/part-{s:05d}.npy", x)
with ThreadPoolExecutor(16) as ex:
    list(ex.map(shard, range((n + rows - 1) // rows)))
PY
echo "gpu_scaling: generated $total x $D f16 in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
touch "$WORK/data/done-$total-$D"
fi
cat "$WORK"/data/*.npy > /dev/null
first=""
printf '| GPUs | points | fit s | points*level/s per GPU | speedup | efficiency | same tree as 1 GPU |\n|---:|---:|---:|---:|---:|---:|---|\n' > "$WORK/table"
for r in $RANKS; do
  n_r=$N; [ "$SCALING" = weak ] && n_r=$((N * r))
  mkdir -p "$WORK/in$r"
  for ((s = 0; s * rows < n_r; ++s)); do ln -s "$WORK/data/$(printf 'part-%05d.npy' $s)" "$WORK/in$r/"; done
  mpirun -np "$r" --oversubscribe --bind-to none "$MEGATAX" fit --input "$WORK/in$r/part-*.npy" \
    --storage "$WORK/m$r" --output "$WORK/o$r" --levels "$LEVELS" --branching "$B" \
    --batch-rows 1048576 --device cuda --executor "$([ "$r" = 1 ] && [ "${ONE_GPU_EXECUTOR:-local}" = local ] && echo local || echo mpi)" > "$WORK/log$r" 2>&1 \
    || { tail -20 "$WORK/log$r"; exit 1; }
  grep -E '^[0-9]+ |^fit:|trained|kernels on|threads:' "$WORK/log$r" | sed "s/^/[$r GPU] /"
  s=$(sed -n 's/^fit: [0-9]* points, \([0-9.]*\) s.*/\1/p' "$WORK/log$r")
  [ -z "$first" ] && first=$s
  same=yes
  [ "$SCALING" = weak ] && same="n/a (weak)"
  if [ "$r" != 1 ] && [ "$SCALING" != weak ]; then
    for f in $(cd "$WORK/m1" && find . -type f ! -name taxonomy.json); do cmp -s "$WORK/m1/$f" "$WORK/m$r/$f" || same=no; done
    for f in $(cd "$WORK/o1" && find . -type f); do cmp -s "$WORK/o1/$f" "$WORK/o$r/$f" || same=no; done
  fi
  awk -v r="$r" -v s="$s" -v f="$first" -v n="$n_r" -v l="$LEVELS" -v same="$same" -v weak="$([ "$SCALING" = weak ] && echo 1 || echo 0)" \
    'BEGIN { sp = weak ? r * f / s : f / s;
             printf "| %d | %d | %.2f | %.3g | %.2f | %.0f%% | %s |\n", r, n, s, n * l / s / r, sp, 100 * sp / r, same }' >> "$WORK/table"
done
cat "$WORK/table"
if [ "${KEEP:-0}" = 1 ]; then rm -rf "$WORK"/m* "$WORK"/o*; else rm -rf "$WORK"; fi
