#!/usr/bin/env bash
# The megatax command line as a user drives it: gen -> fit -> info -> predict, then the
# error contract (one line on stderr, exit 2 for usage, 1 for failures, nothing written).
# usage: megatax_cli_test.sh PATH/TO/megatax
set -euo pipefail
bin=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/megatax-cli.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$bin" --help | grep -q "commands:" || fail "megatax --help"
for c in gen fit predict info demo; do "$bin" $c --help | grep -q "usage: megatax $c" || fail "$c --help"; done

"$bin" gen --out "$work/data" --n 6000 --dim 12 --levels 2 --branching 5 --shards 3 --seed 4 >/dev/null
[ -f "$work/data/part-00002.npy" ] && [ -f "$work/data/labels-00000.npy" ] || fail "gen files"
"$bin" fit --input "$work/data/part-*.npy" --storage "$work/tax" --output "$work/out" \
  --levels 2 --branching 5 --threads 2 --quiet > "$work/fit.txt"
grep -q "points\*level/s" "$work/fit.txt" || fail "fit report"
for s in 00000 00001 00002; do
  for f in paths ids dist; do [ -f "$work/out/part-$s.$f.npy" ] || fail "missing part-$s.$f.npy"; done
done
"$bin" info --storage "$work/tax" | grep -q "status complete" || fail "info"
"$bin" info --storage "$work/tax" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["levels_done"]==2 and d["leaves"]["count"]>0' \
  || fail "info --json"
"$bin" predict --storage "$work/tax" --input "$work/data/part-*.npy" --output "$work/pred" --quiet >/dev/null
for s in 00000 00001 00002; do
  for f in paths ids dist; do cmp -s "$work/out/part-$s.$f.npy" "$work/pred/part-$s.$f.npy" || fail "predict differs: part-$s.$f"; done
done

# Usage errors: exit 2 and one line.
set +e
"$bin" fit --storage "$work/t2" --output "$work/o2" 2>"$work/err"; rc=$?
set -e
[ $rc -eq 2 ] || fail "missing --input: exit $rc"
[ "$(wc -l <"$work/err")" -eq 1 ] && grep -q -- "--input is required" "$work/err" || fail "usage message: $(cat "$work/err")"
set +e
"$bin" fit --input x --bogus 1 2>"$work/err"; rc=$?
set -e
[ $rc -eq 2 ] && grep -q "unknown option --bogus" "$work/err" || fail "unknown option"
set +e
"$bin" predict --storage "$work/tax" --input "$work/data/part-*.npy" --output "$work/p2" --gpu 0 2>"$work/err"; rc=$?
set -e
[ $rc -eq 2 ] && grep -q -- "--gpu-dtype and --gpu need --device cuda" "$work/err" || fail "predict --gpu without --device cuda"
# predict --device cuda: the GPU's files (a CUDA build on a GPU machine), else one clear line.
set +e
"$bin" predict --storage "$work/tax" --input "$work/data/part-*.npy" --output "$work/p3" --device cuda --quiet \
  >/dev/null 2>"$work/err"; rc=$?
set -e
if [ $rc -eq 0 ]; then
  [ -f "$work/p3/part-00000.paths.npy" ] || fail "predict --device cuda wrote no paths"
else
  [ $rc -eq 1 ] && [ "$(wc -l <"$work/err")" -eq 1 ] && grep -qi "cuda" "$work/err" || fail "predict --device cuda: $(cat "$work/err")"
  [ ! -e "$work/p3" ] || fail "predict --device cuda failed but wrote outputs"
fi

# Failures: exit 1, one line naming the file, nothing written.
printf 'not an npy file at all' > "$work/bad.npy"
set +e
"$bin" fit --input "$work/bad.npy" --storage "$work/t3" --output "$work/o3" --levels 1 --branching 2 --quiet 2>"$work/err"; rc=$?
set -e
[ $rc -eq 1 ] || fail "bad file: exit $rc"
[ "$(wc -l <"$work/err")" -eq 1 ] && grep -q "bad.npy" "$work/err" || fail "bad file message: $(cat "$work/err")"
[ ! -e "$work/t3/taxonomy.json" ] || fail "bad input left a manifest"

# Refit without --resume is refused; with --resume on a complete fit it is a no-op.
set +e
"$bin" fit --input "$work/data/part-*.npy" --storage "$work/tax" --output "$work/out" --levels 2 --branching 5 --quiet 2>"$work/err"; rc=$?
set -e
[ $rc -eq 1 ] && grep -q "already exists" "$work/err" || fail "overwrite not refused"
"$bin" fit --input "$work/data/part-*.npy" --storage "$work/tax" --output "$work/out" --levels 2 --branching 5 --quiet --resume >/dev/null

# Kill -9 in the middle of a fit, then --resume: identical bytes.
"$bin" gen --out "$work/big" --n 60000 --dim 16 --levels 3 --branching 6 --shards 6 --seed 9 >/dev/null
"$bin" fit --input "$work/big/part-*.npy" --storage "$work/ref" --output "$work/refout" --levels 3 --branching 6 --quiet >/dev/null
"$bin" fit --input "$work/big/part-*.npy" --storage "$work/kill" --output "$work/killout" --levels 3 --branching 6 --quiet >/dev/null &
pid=$!
sleep 0.4
kill -9 $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
if [ -e "$work/kill/taxonomy.json" ]; then
  "$bin" fit --input "$work/big/part-*.npy" --storage "$work/kill" --output "$work/killout" --levels 3 --branching 6 --quiet --resume >/dev/null
else
  "$bin" fit --input "$work/big/part-*.npy" --storage "$work/kill" --output "$work/killout" --levels 3 --branching 6 --quiet >/dev/null
fi
for f in "$work"/refout/*.npy; do cmp -s "$f" "$work/killout/$(basename "$f")" || fail "resumed output differs: $(basename "$f")"; done
for l in 1 2 3; do cmp -s "$work/ref/level-$l/centroids.npy" "$work/kill/level-$l/centroids.npy" || fail "resumed centroids differ at level $l"; done
echo "megatax CLI: 1 passed, 0 failed"
