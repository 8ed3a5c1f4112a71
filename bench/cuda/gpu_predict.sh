#!/usr/bin/env bash
# bench/cuda/gpu_predict.sh -- predict-to-files on one GPU against the CPU, same model, same data,
# same run: generates N x D shards (DTYPE, default f16), fits a LEVELS x B model on the GPU,
# then times `megatax predict --device cuda` and the CPU's `megatax predict --exact` (the
# same descent: every child scanned) and default predict (HNSW graphs on wide nodes), each
# REPEAT times in turn; checks the GPU's files against the fit's own outputs (the same rows:
# byte for byte) and prints the share of paths equal to the CPU's. Ends with a table; then,
# when ROWS_BENCH names bench_predict_rows, the same rows predicted as an in-memory array.
#
#   bench/cuda/gpu_predict.sh MEGATAX N D LEVELS BRANCHING [SHARDS]
# Environment: WORK (default /tmp/megatax_gpu_predict), DTYPE (f16), REPEAT (2), METRIC (l2),
#   BATCH_ROWS (1048576), KEEP (1: leave WORK in place), ROWS_BENCH (bench_predict_rows' path).
set -euo pipefail
MEGATAX=$1 N=$2 D=$3 LEVELS=$4 B=$5 SHARDS=${6:-8}
WORK=${WORK:-/tmp/megatax_gpu_predict}
BATCH=${BATCH_ROWS:-1048576}
rm -rf "$WORK"; mkdir -p "$WORK"
"$MEGATAX" gen --out "$WORK/data" --n "$N" --dim "$D" --levels 2 --branching "$B" --shards "$SHARDS" \
  --dtype "${DTYPE:-f16}" --seed 1 >/dev/null
sync; cat "$WORK"/data/part-*.npy >/dev/null
"$MEGATAX" fit --input "$WORK/data/part-*.npy" --storage "$WORK/model" --output "$WORK/fit_out" --levels "$LEVELS" \
  --branching "$B" --batch-rows "$BATCH" --device cuda --metric "${METRIC:-l2}" --quiet | grep '^fit:' || true
declare -A best
run() {  # run LABEL [predict args...]
  local label=$1; shift
  rm -rf "$WORK/p_$label"
  local t0 t1
  t0=$(date +%s.%N)
  "$MEGATAX" predict --storage "$WORK/model" --input "$WORK/data/part-*.npy" --output "$WORK/p_$label" "$@" \
    2>"$WORK/$label.log" >/dev/null
  t1=$(date +%s.%N)
  local s; s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  echo "gpu_predict: $label ($*): $s s; $(grep -o 'predict: [0-9]* rows in .*' "$WORK/$label.log" | head -1)"
  if [ -z "${best[$label]:-}" ] || awk -v a="$s" -v b="${best[$label]}" 'BEGIN { exit !(a < b) }'; then best[$label]=$s; fi
}
for rep in $(seq 1 "${REPEAT:-2}"); do
  run gpu --device cuda
  run cpu_exact --exact
  run cpu
done
same=$(diff -rq "$WORK/fit_out" "$WORK/p_gpu" >/dev/null && echo identical || echo DIFFERENT)
agree=$(python3 - "$WORK" <<'PY'
import glob, sys, numpy as np
w = sys.argv[1]
P = lambda d: np.concatenate([np.load(f) for f in sorted(glob.glob(f"{w}/{d}/*.paths.npy"))])
g = P("p_gpu")
print(f"{np.mean((g == P('p_cpu_exact')).all(1)) * 100:.3f}% / {np.mean((g == P('p_cpu')).all(1)) * 100:.3f}%")
PY
)
gpu_s=${best[gpu]} cpu_x=${best[cpu_exact]} cpu_s=${best[cpu]}
echo
echo "==== gpu_predict summary: $N x $D ${DTYPE:-f16}, model $LEVELS x $B (${METRIC:-l2}), best of ${REPEAT:-2}, wall with the model's load ===="
printf '%-34s %10s %12s\n' "predict" "seconds" "CPU / GPU"
printf '%-34s %10s %12s\n' "GPU (--device cuda)" "$gpu_s" "1.00x"
printf '%-34s %10s %12s\n' "CPU --exact (same descent)" "$cpu_x" "$(awk -v a="$cpu_x" -v b="$gpu_s" 'BEGIN { printf "%.1fx", a / b }')"
printf '%-34s %10s %12s\n' "CPU default (HNSW where wide)" "$cpu_s" "$(awk -v a="$cpu_s" -v b="$gpu_s" 'BEGIN { printf "%.1fx", a / b }')"
echo "GPU files vs the fit's own outputs: $same; paths equal to the CPU's exact / default: $agree"
if [ -n "${ROWS_BENCH:-}" ]; then
  "$ROWS_BENCH" "$WORK/model" "$WORK/data/part-*.npy" "$N" "${REPEAT:-2}"
fi
[ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
