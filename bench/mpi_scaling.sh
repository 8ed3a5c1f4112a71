#!/usr/bin/env bash
# mpi_scaling.sh -- distributed fit on this machine: 1 rank vs 2 ranks (one thread each, so
# the ratio measures distribution, not threading), and 8 ranks oversubscribed over 64 shards
# (a simulation of scale: correctness and per-rank dispatch, not a speed claim). Checks that
# every run writes the same tree, and compares with `megatax plan`.
#
# usage: bench/mpi_scaling.sh [--n N] [--dim D] [--bin PATH/TO/megatax]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
n=2000000
dim=64
bin=$root/build/release/tools/megatax
while [ $# -gt 0 ]; do
  case $1 in
    --n) n=$2; shift ;;
    --dim) dim=$2; shift ;;
    --bin) bin=$2; shift ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "mpi_scaling.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$bin" ] || { echo "mpi_scaling.sh: $bin not built" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/mpi-scaling.XXXXXX")
trap 'rm -rf "$work"' EXIT
mpi() { local np=$1; shift; mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$np" "$bin" "$@"; }
fit_args=(fit --levels 3 --branching 16 --sample-per-centroid 128 --threads 1 --quiet)

"$bin" gen --out "$work/d16" --n "$n" --dim "$dim" --levels 3 --branching 16 --shards 16 --seed 1 >/dev/null
"$bin" gen --out "$work/d64" --n "$n" --dim "$dim" --levels 3 --branching 16 --shards 64 --seed 1 >/dev/null

t() { local s=$(date +%s.%N); "$@" >"$work/last.log" 2>&1; echo "$(date +%s.%N) - $s" | bc; }
# The fit's own seconds (its report, printed by rank 0): without mpirun's start-up.
fit_s() { sed -n 's/^fit: [0-9]* points, \([0-9.]*\) s.*/\1/p' "$work/last.log"; }
t1=$(t mpi 1 "${fit_args[@]}" --input "$work/d16/part-*.npy" --storage "$work/t1" --output "$work/o1"); f1=$(fit_s)
t2=$(t mpi 2 "${fit_args[@]}" --input "$work/d16/part-*.npy" --storage "$work/t2" --output "$work/o2"); f2=$(fit_s)
tl=$(t "$bin" fit --levels 3 --branching 16 --sample-per-centroid 128 --threads 2 --quiet --executor local \
  --input "$work/d16/part-*.npy" --storage "$work/tl" --output "$work/ol"); fl=$(fit_s)
for l in 1 2 3; do cmp -s "$work/t1/level-$l/centroids.npy" "$work/t2/level-$l/centroids.npy" || { echo "tree differs" >&2; exit 1; }; done
diff -rq "$work/o1" "$work/o2" >/dev/null || { echo "outputs differ" >&2; exit 1; }

# 8 ranks over 64 shards: same tree as 1 rank on the same data, and the per-rank log.
mpi 1 "${fit_args[@]}" --input "$work/d64/part-*.npy" --storage "$work/u1" --output "$work/p1" >/dev/null 2>&1
t8=$(t mpi 8 fit --levels 3 --branching 16 --sample-per-centroid 128 --threads 1 --input "$work/d64/part-*.npy" --storage "$work/u8" --output "$work/p8")
grep "rank .*level 1: assigned" "$work/last.log" | sed 's/^megatax: /  /' > "$work/ranks.txt"
for l in 1 2 3; do cmp -s "$work/u1/level-$l/centroids.npy" "$work/u8/level-$l/centroids.npy" || { echo "8-rank tree differs" >&2; exit 1; }; done
diff -rq "$work/p1" "$work/p8" >/dev/null || { echo "8-rank outputs differ" >&2; exit 1; }

echo "| run | wall s (with mpirun start) | speedup | fit s (its report) | speedup |"
echo "|---|---:|---:|---:|---:|"
printf '| 1 rank x 1 thread, 16 shards | %.2f | 1.00 | %.2f | 1.00 |\n' "$t1" "$f1"
printf '| 2 ranks x 1 thread, 16 shards | %.2f | %.2f | %.2f | %.2f |\n' "$t2" "$(echo "$t1 / $t2" | bc -l)" "$f2" "$(echo "$f1 / $f2" | bc -l)"
printf '| 1 process x 2 threads (local) | %.2f | %.2f | %.2f | %.2f |\n' "$tl" "$(echo "$t1 / $tl" | bc -l)" "$fl" "$(echo "$f1 / $fl" | bc -l)"
printf '| 8 ranks x 1 thread on 2 cores, 64 shards | %.2f | (oversubscribed) |\n' "$t8"
echo "trees and outputs identical across 1, 2 and 8 ranks: yes"
echo "8-rank dispatch, level 1 (shards per rank):"
cat "$work/ranks.txt"
echo "plan for the 2-rank run (rates: measure the 1-rank run's assign rate from its report):"
"$bin" plan --n "$n" --dim "$dim" --levels 3 --branching 16 --sample-per-centroid 128 --workers 2 \
  --gemm-tflops 0.08 --storage-gbps 2 --network-gbps 5 --shards 16
