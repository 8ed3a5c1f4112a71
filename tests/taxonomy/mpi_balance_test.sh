#!/usr/bin/env bash
# Balanced fit (per-node branching + dynamic splitting on the last level) with HNSW search of
# wide parents, on 1, 2 and 3 MPI ranks: byte-identical model files (centroids, node tables,
# inertia, HNSW graphs) and outputs; greedy predict reproduces the fit's outputs.
# usage: mpi_balance_test.sh PATH/TO/megatax
set -euo pipefail
bin=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/megatax-mpi-balance.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
"$bin" gen --out "$work/data" --n 30000 --dim 16 --levels 2 --branching 8 --shards 5 --zipf 1.1 \
  --separation 3 >/dev/null 2>&1
fit_args=(fit --input "$work/data/part-*.npy" --levels 2 --branching 8 --balance --max-leaf-size 400
          --hnsw-threshold 6 --threads 1 --quiet)
for np in 1 2 3; do
  mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$np" "$bin" "${fit_args[@]}" \
    --storage "$work/tax$np" --output "$work/out$np" >/dev/null
done
[ -f "$work/tax1/level-1/hnsw-0.bin" ] || fail "no HNSW graph for the root's 8 children"
grep -q '"split_rounds": [1-9]' "$work/tax1/taxonomy.json" || fail "no dynamic splitting round ran"
for np in 2 3; do
  (cd "$work/tax1" && find . -name '*.npy' -o -name '*.bin') | while read -r f; do
    cmp -s "$work/tax1/$f" "$work/tax$np/$f" || fail "$np ranks: $f differs"
  done
  for f in "$work/out1"/*.npy; do cmp -s "$f" "$work/out$np/$(basename "$f")" || fail "$np ranks: $(basename "$f") differs"; done
done
"$bin" predict --storage "$work/tax1" --input "$work/data/part-*.npy" --output "$work/pred" --quiet >/dev/null
for f in "$work/out1"/*.npy; do cmp -s "$f" "$work/pred/$(basename "$f")" || fail "predict: $(basename "$f") differs"; done
echo "mpi_balance: OK"
