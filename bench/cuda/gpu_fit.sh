#!/usr/bin/env bash
# bench/cuda/gpu_fit.sh -- the engine end to end on one GPU vs the CPU, same data, same run:
# generates N x D f16 shards (local disk), then `megatax fit` with --device cuda (f16 tensor
# cores) and, when CPU_TOO=1, --device cpu; prints each level's train / assign seconds, the
# fit rate (points * level / s), the floors of reading X once (from the page cache by `cat`
# and by the engine's readers, bench_read_pass; over the bus from page-locked memory), and for
# each run a summary line: its passes (over the readers' floor) and the training's share of
# the fit (issue 10's <= 15%).
#
#   bench/cuda/gpu_fit.sh MEGATAX N D LEVELS BRANCHING [SHARDS]
# Environment: WORK (default /tmp/megatax_gpu_fit), CPU_TOO (0), BATCH_ROWS (1048576),
#   BASE_MEGATAX (another build's megatax, e.g. the commit before a change: also fitted with
#   --device cuda on the same data, before ours, for a same-run comparison), EXTRA_ARGS (also
#   fit --device cuda with these extra arguments, e.g. "--memory-budget-mb 4096", on the
#   same data, after the plain fit), REPEAT (1: base and ours fitted that many times, in
#   turn, for noisy machines; the files compared are the last round's), GEN (planted:
#   `megatax gen`'s planted hierarchy; numpy: normal noise written by numpy on 16 threads),
#   KEEP (1: leave WORK in place at the end, e.g. for more fits on the same data), REUSE (1:
#   fit the data a KEEP=1 run left in WORK, of the same N, D and SHARDS, instead of generating it),
#   READ_BENCH (bench_read_pass, for the floor of a pass reading X from the shards; default:
#   beside MEGATAX's build),
#   PINNED_BENCH (bench_pinned, for the floor of a pass over X kept in host memory; default:
#   beside MEGATAX's build), STORE (the folder of the fits' model and output folders, default
#   WORK: e.g. a tmpfs such as /dev/shm/megatax_fit, to see the fit without the disk's writes).
set -euo pipefail
MEGATAX=$1 N=$2 D=$3 LEVELS=$4 B=$5 SHARDS=${6:-16}
WORK=${WORK:-/tmp/megatax_gpu_fit}
STORE=${STORE:-$WORK}
BATCH=${BATCH_ROWS:-1048576}
t0=$(date +%s.%N)
GEN_NAME=${GEN:-planted}
GEN_VERB=generated
if [ "${REUSE:-0}" = 1 ] && [ -d "$WORK/data" ]; then
  rm -rf "$STORE"/m_* "$STORE"/o_*
  GEN_NAME="as a KEEP=1 run left it"
  GEN_VERB=reused
elif [ "${GEN:-planted}" = numpy ]; then
  rm -rf "$WORK"; mkdir -p "$WORK/data"
  # Normal noise from numpy on every core (fast for tens of GB; no structure: every node
  # problem runs its full max_iter, the slowest case for training).
  python3 - "$WORK/data" "$N" "$D" "$SHARDS" <<'PY'
import sys, numpy as np
from concurrent.futures import ThreadPoolExecutor
out, n, d, shards = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def shard(s):
    b, e = n * s // shards, n * (s + 1) // shards
    x = np.random.default_rng(s).standard_normal((e - b, d), dtype=np.float32).astype(np.float16)
    np.save(f"{out}/part-{s:05d}.npy", x)
with ThreadPoolExecutor(16) as ex:
    list(ex.map(shard, range(shards)))
PY
else
  rm -rf "$WORK"; mkdir -p "$WORK"
  "$MEGATAX" gen --out "$WORK/data" --n "$N" --dim "$D" --levels "$LEVELS" --branching "$B" \
    --shards "$SHARDS" --dtype f16 --seed 1 >/dev/null
fi
mkdir -p "$STORE"  # (after the data: a fresh WORK is made anew above)
# Flush the generated files before anything is timed: otherwise their write-back (tens of GB)
# runs under the fit and slows its fsyncs (state files, commits) by seconds, more the faster
# the fit reaches them.
sync
t1=$(date +%s.%N)
bytes=$(du -cb "$WORK"/data/part-*.npy | tail -1 | cut -f1)
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
echo "gpu_fit: $GEN_VERB ($GEN_NAME) $N x $D f16 in $SHARDS shards ($((bytes / 1000000)) MB) in $(secs "$t0" "$t1") s"
# Floor: one read of X from the page cache (what every assignment pass must at least do).
cat "$WORK"/data/part-*.npy >/dev/null
r0=$(date +%s.%N); cat "$WORK"/data/part-*.npy >/dev/null; r1=$(date +%s.%N)
echo "gpu_fit: read X once (page cache, cat): $(secs "$r0" "$r1") s = $(awk -v b="$bytes" -v a="$r0" -v c="$r1" 'BEGIN { printf "%.2f", b / (c - a) / 1e9 }') GB/s"
# The floor of a pass that reads X from the shards (level 1; every level with
# MEGATAX_CUDA_RESIDENT=0): every shard read through the engine's own readers on all cores,
# rows as stored, no descent (bench_read_pass, beside MEGATAX's build; `cat` above reads on one
# thread, a third of a pass's rate on an H200 host). Best of two rounds; the summaries give
# each pass over it.
READ_BENCH=${READ_BENCH:-$(dirname "$(readlink -f "$MEGATAX")")/../bench/bench_read_pass}
READ_FLOOR=""
if [ -x "$READ_BENCH" ]; then
  line=$("$READ_BENCH" "$WORK/data/part-*.npy" --batch-rows "$BATCH" --repeat 2 2>&1 | tail -1) || line=""
  case "$line" in
    best*) READ_FLOOR=$(echo "$line" | awk '{ print $2 }')
           echo "gpu_fit: read X once (our readers on all cores, bench_read_pass): $line" ;;
    *) echo "gpu_fit: bench_read_pass failed: $line" ;;
  esac
fi
# The floor of a pass over X kept in page-locked host memory (MEGATAX_CUDA_RESIDENT=host):
# X over the bus once, at the rate bench_pinned measures (same build, when it was built).
PINNED_BENCH=${PINNED_BENCH:-$(dirname "$(readlink -f "$MEGATAX")")/../bench/cuda/bench_pinned}
if [ -x "$PINNED_BENCH" ]; then
  rate=$("$PINNED_BENCH" 1024 1 64 2>/dev/null | awk '/^ours \(PinnedBuffer\)/ { r = $4 } END { print r }') || rate=""
  [ -n "$rate" ] && echo "gpu_fit: read X once from page-locked host memory (bench_pinned: $rate GB/s): $(awk -v b="$bytes" -v r="$rate" 'BEGIN { printf "%.2f", b / r / 1e9 }') s"
fi
# What the disk takes in: 4 GiB written and fsynced (the fit's model files, state and outputs
# go there: a deep level's centroids alone are gigabytes).
w0=$(date +%s.%N); dd if=/dev/zero of="$STORE/dd.test" bs=16M count=256 conv=fsync status=none; w1=$(date +%s.%N)
rm -f "$STORE/dd.test"
echo "gpu_fit: write 4 GiB where the fits write (STORE) (dd, fsync): $(secs "$w0" "$w1") s = $(awk -v a="$w0" -v c="$w1" 'BEGIN { printf "%.2f", 4294967296 / (c - a) / 1e9 }') GB/s"
# summarize LABEL LOG: a run's passes (one a level), its training's seconds (every level's
# "trained ... in X s") and their share of the fit's, and the process's peak RSS (host memory:
# a fit keeping X in page-locked copies holds them there; mapped shard files count too).
summarize() {
  awk -v label="$1" -v floor="$READ_FLOOR" '
    /level [0-9]+: trained .* in [0-9.]+ s/ { for (i = 1; i < NF; ++i) if ($i == "in") { t += $(i + 1); break } }
    /level [0-9]+: assigned .* in [0-9.]+ s/ {
      for (i = 1; i < NF; ++i) if ($i == "in") {
        p = p (p == "" ? "" : " / ") sprintf("%.2f", $(i + 1))
        if (floor > 0) r = r (r == "" ? "" : " / ") sprintf("%.2fx", $(i + 1) / floor)
        break } }
    /^fit: / { for (i = 2; i <= NF; ++i) if ($i == "s,") f = $(i - 1) }
    /^peak RSS [0-9]+ KB/ { rss = $3 }
    END { if (f > 0) printf "gpu_fit: %s: passes %s s%s; training %.2f s = %.1f%% of the fit (%.2f s); peak RSS %.1f GB\n", label, p, r == "" ? "" : " (" r " the read of X by bench_read_pass)", t, 100 * t / f, f, rss * 1024 / 1e9 }' "$2"
}
run() {  # run LABEL BINARY DEVICE [fit args...]
  local label=$1 bin=$2 dev=$3; shift 3
  rm -rf "$STORE/m_$label" "$STORE/o_$label"  # (a repeated run starts afresh)
  echo "---- $label: megatax fit --device $dev $* (levels $LEVELS x $B, batch $BATCH) ----"
  /usr/bin/time -f "peak RSS %M KB, wall %e s" "$bin" fit --input "$WORK/data/part-*.npy" \
    --storage "$STORE/m_$label" --output "$STORE/o_$label" --levels "$LEVELS" --branching "$B" \
    --batch-rows "$BATCH" --device "$dev" "$@" 2>&1 | tr '\r' '\n' |
    grep -E "^level|^[0-9]+ |^fit:|peak RSS|trained|assigned|descend:|training:|training, lane|built in|summed|committed|in the background" |
    sed 's/shards \[[0-9,]*\]/shards/' | tee "$WORK/run_$label.log"
  summarize "$label" "$WORK/run_$label.log"
}
for rep in $(seq 1 "${REPEAT:-1}"); do
  [ "${REPEAT:-1}" = 1 ] || echo "gpu_fit: round $rep of $REPEAT"
  if [ -n "${BASE_MEGATAX:-}" ]; then
    run base-cuda "$BASE_MEGATAX" cuda
  fi
  run cuda "$MEGATAX" cuda
done
if [ -n "${BASE_MEGATAX:-}" ]; then
  same() { if diff -rq -x taxonomy.json "$1" "$2" >/dev/null; then echo identical; else echo "DIFFERENT ($(diff -rq -x taxonomy.json "$1" "$2" | head -3 | tr '\n' ' '))"; fi; }
  echo "gpu_fit: base vs ours: model files $(same "$STORE/m_base-cuda" "$STORE/m_cuda"), outputs $(same "$STORE/o_base-cuda" "$STORE/o_cuda")"
  # Quality, when the bits differ: each level's total inertia (sum of squared distances of
  # the points to their node's centroid), ours over the base's.
  python3 - "$STORE" "$LEVELS" <<'PY'
import sys, numpy as np
w, levels = sys.argv[1], int(sys.argv[2])
for l in range(1, levels + 1):
    a = np.load(f"{w}/m_base-cuda/level-{l}/inertia.npy").sum()
    b = np.load(f"{w}/m_cuda/level-{l}/inertia.npy").sum()
    print(f"gpu_fit: level {l} inertia base {a:.6g}, ours {b:.6g} (ours / base {b / a:.6f})")
PY
fi
if [ -n "${EXTRA_ARGS:-}" ]; then
  # shellcheck disable=SC2086 # the extra arguments are meant to split
  run cuda-extra "$MEGATAX" cuda $EXTRA_ARGS
fi
if [ "${CPU_TOO:-0}" = 1 ]; then
  run cpu "$MEGATAX" cpu
  python3 - "$STORE" "$SHARDS" <<'PY'
import sys, numpy as np
w, s = sys.argv[1], int(sys.argv[2])
a = np.concatenate([np.load(f"{w}/o_cpu/part-{i:05d}.paths.npy") for i in range(s)])
b = np.concatenate([np.load(f"{w}/o_cuda/part-{i:05d}.paths.npy") for i in range(s)])
print(f"gpu_fit: cuda vs cpu paths equal for {100 * (a == b).all(axis=1).mean():.3f}% of rows")
PY
fi
[ "${KEEP:-0}" = 1 ] || rm -rf "$WORK" "$STORE"/m_* "$STORE"/o_*
