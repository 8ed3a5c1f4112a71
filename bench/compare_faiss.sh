#!/usr/bin/env bash
# compare_faiss.sh -- bench_indexflat (ours) against FAISS IndexFlatL2 on the same data, plus
# this machine's sgemm and memory-read rates as yardsticks. Prints a markdown table:
#   row | ours ms | faiss ms | speedup (faiss/ours) | ours GFLOP/s (% sgemm) | ours GB/s (% mem bw)
# and a correctness cross-check (recall@k of our ids against FAISS's on a small case).
#
# usage: bench/compare_faiss.sh [--quick] [--bin PATH] [--iters I] [--threads T]
#                                [--faiss-blas-threshold N]
#   --quick      smaller databases (N/5) for a fast look
#   --bin PATH   bench_indexflat binary (default $BENCH_INDEXFLAT or build/dev/tools/...)
#   --iters I    timed searches per row (default 5; warm-up 1)
#   --threads T  threads for both (default: nproc)
#   --faiss-blas-threshold N  FAISS computes distances with sgemm from N queries on (FAISS
#                1.15's default is 128000, so Q <= 128 takes its one-query-at-a-time SIMD
#                path; 20 was the default of older releases). Default: FAISS's own.
# Full table: Q in {1, 16, 128} x (N=1M D=128, N=200k D=1024) x k in {10, 100}.
# FAISS and machine_rates.py run with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset and
# OMP_WAIT_POLICY=PASSIVE; our tool runs in the default environment.
# Progress goes to stderr, the report to stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
quick=0
bin=${BENCH_INDEXFLAT:-$root/build/dev/tools/bench_indexflat}
iters=5
threads=$(nproc)
faiss_extra=()

die() { echo "compare_faiss.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --bin) [ $# -ge 2 ] || die "--bin: missing value"; bin=$2; shift ;;
    --iters) [ $# -ge 2 ] || die "--iters: missing value"; iters=$2; shift ;;
    --threads) [ $# -ge 2 ] || die "--threads: missing value"; threads=$2; shift ;;
    --faiss-blas-threshold)
      [ $# -ge 2 ] || die "--faiss-blas-threshold: missing value"
      faiss_extra=(--blas-threshold "$2"); shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
[ -x "$bin" ] || die "$bin not found or not executable: build it first (cmake --build build/dev)"
python3 -c 'import faiss, numpy' 2>/dev/null || die "python3 with numpy and faiss is needed"

faiss_env=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/compare_faiss.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if [ "$quick" = 1 ]; then
  shapes=("200000 128" "40000 1024")
else
  shapes=("1000000 128" "200000 1024")
fi
qs=(1 16 128)
ks=(10 100)
max_q=128

# field LINE KEY: the value of KEY=... in a RESULT/RATES line.
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }
human() { awk -v n="$1" 'BEGIN { if (n % 1000000 == 0) printf "%dM", n / 1000000;
                                 else if (n % 1000 == 0) printf "%dk", n / 1000; else print n }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "n/a" }'; }

# ---- machine rates ----------------------------------------------------------------------
echo "measuring machine rates..." >&2
rates_out=$("${faiss_env[@]}" python3 "$here/machine_rates.py" $([ "$quick" = 1 ] && echo --quick))
echo "$rates_out" >&2
rates=$(grep '^RATES' <<<"$rates_out")
sgemm=$(field "$rates" sgemm_gflops)
membw=$(field "$rates" mem_gbps)

# ---- the table --------------------------------------------------------------------------
rows=()
for shape in "${shapes[@]}"; do
  read -r n d <<<"$shape"
  echo "generating N=$n D=$d..." >&2
  python3 "$here/faiss_bench.py" --generate-only --n "$n" --d "$d" --q "$max_q" --seed 1234 \
    --write-base "$tmp/base.fbin" --write-queries "$tmp/queries.fbin" >&2
  for q in "${qs[@]}"; do
    for k in "${ks[@]}"; do
      label="Q=$q N=$(human "$n") D=$d k=$k"
      echo "running $label..." >&2
      ours_out=$("$bin" --base "$tmp/base.fbin" --queries "$tmp/queries.fbin" --q "$q" --k "$k" \
                 --threads "$threads" --iters "$iters" --warmup 1)
      ours=$(grep '^RESULT' <<<"$ours_out")
      faiss_out=$("${faiss_env[@]}" python3 "$here/faiss_bench.py" --base "$tmp/base.fbin" \
                  --queries "$tmp/queries.fbin" --q "$q" --k "$k" --threads "$threads" \
                  --iters "$iters" --warmup 1 "${faiss_extra[@]}")
      theirs=$(grep '^RESULT' <<<"$faiss_out")
      echo "  ours:  $ours" >&2
      echo "  faiss: $theirs" >&2
      ours_ms=$(field "$ours" avg_ms)
      faiss_ms=$(field "$theirs" avg_ms)
      gflops=$(field "$ours" gflops)
      gbps=$(field "$ours" gbps)
      rows+=("| $label | $(printf %.3f "$ours_ms") | $(printf %.3f "$faiss_ms") | $(ratio "$faiss_ms" "$ours_ms") | $(printf %.1f "$gflops") ($(pct "$gflops" "$sgemm")) | $(printf %.2f "$gbps") ($(pct "$gbps" "$membw")) |")
    done
  done
  simd=$(field "$ours" simd)
  faiss_simd=$(field "$theirs" simd)
done
rm -f "$tmp/base.fbin" "$tmp/queries.fbin"

# ---- cross-check: our ids against FAISS's -----------------------------------------------
echo "cross-checking ids..." >&2
python3 "$here/faiss_bench.py" --generate-only --n 20000 --d 64 --q 200 --seed 99 \
  --write-base "$tmp/cb.fbin" --write-queries "$tmp/cq.fbin" >&2
checks=()
for k in 10 100; do
  "$bin" --base "$tmp/cb.fbin" --queries "$tmp/cq.fbin" --k "$k" --iters 1 --warmup 0 \
    --ids-out "$tmp/ours.ids" >/dev/null
  "${faiss_env[@]}" python3 "$here/faiss_bench.py" --base "$tmp/cb.fbin" --queries "$tmp/cq.fbin" \
    --k "$k" --iters 1 --warmup 0 --ids-out "$tmp/faiss.ids" >/dev/null
  checks+=("$(python3 - "$tmp/ours.ids" "$tmp/faiss.ids" "$k" <<'EOF'
import sys
import numpy as np

def read_ids(path):
    with open(path, "rb") as f:
        nq, k = (int(v) for v in np.fromfile(f, dtype=np.uint32, count=2))
        return np.fromfile(f, dtype=np.int64, count=nq * k).reshape(nq, k)

ours, theirs = read_ids(sys.argv[1]), read_ids(sys.argv[2])
k = int(sys.argv[3])
recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ours, theirs)])
same = np.mean((ours == theirs).all(axis=1))
print("recall@%d of ours vs FAISS (N=20k D=64 Q=200): %.4f; rows with identical id lists: %.1f%%"
      % (k, recall, 100 * same))
EOF
)")
done

# ---- report -----------------------------------------------------------------------------
echo
echo "Machine: $(nproc) CPUs ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)), threads used: $threads;" \
     "sgemm $(printf %.1f "$sgemm") GFLOP/s, memory read $(printf %.2f "$membw") GB/s" \
     "($(field "$rates" blas) via numpy)."
faiss_blas=$(sed -n 's/.*blas_threshold=\([0-9]*\).*/\1/p' <<<"$faiss_out")
echo "Ours: bench_indexflat f32, simd=$simd. FAISS $(python3 -c 'import faiss; print(faiss.__version__)') IndexFlatL2, $faiss_simd, distance_compute_blas_threshold=$faiss_blas." \
     "Times: average of $iters searches after 1 warm-up.$([ "$quick" = 1 ] && echo " (--quick: smaller N)")"
echo
echo "| row | ours ms | faiss ms | speedup (faiss/ours) | ours GFLOP/s (% sgemm) | ours GB/s (% mem bw) |"
echo "|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
printf '%s\n' "${checks[@]}"
