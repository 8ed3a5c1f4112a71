#!/usr/bin/env bash
# compare_kmeans.sh -- flat k-means: bench_kmeans (ours: greedy k-means++ on a subsample, then
# Lloyd) against FAISS's Kmeans (random init, then Lloyd) on the same data, every point used,
# 10 iterations, tol 0; both final centroid sets scored by the same exact evaluator
# (kmeans_faiss.py eval: nearest centroid by IndexFlatL2, squared distances in float64).
# Prints markdown tables:
#   row | ours s | faiss s | speedup (faiss/ours) | ours inertia | faiss inertia |
#       inertia ratio (ours/faiss) | ours assign GFLOP/s | % of sgemm
# then where our time goes (seeding vs Lloyd) and, unless --no-extra, other FAISS variants
# (Kmeans with k-means++ init, SuperKmeans) scored the same way.
#
# usage: bench/compare_kmeans.sh [--quick] [--bin PATH] [--iters I] [--threads T] [--no-extra]
#   --quick      N/4 for a fast look
#   --bin PATH   bench_kmeans binary (default $BENCH_KMEANS or build/bench/bench/bench_kmeans)
#   --iters I    Lloyd iterations for both (default 10)
#   --threads T  threads for both (default: nproc)
#   --no-extra   skip the extra FAISS variants
# Rows: (N=200k D=128 K=1024) and (N=100k D=1024 K=256); data: kmeans_faiss.py gen (4K true
# centres, noise 1, seed 1234). Ours does iters updates and iters + 1 assignments (the last
# one scores the returned centroids); FAISS does iters assignments + updates.
# FAISS and machine_rates.py run with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset and
# OMP_WAIT_POLICY=PASSIVE; our tool runs in the default environment.
# Progress goes to stderr, the report to stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
quick=0
extra=1
bin=${BENCH_KMEANS:-$root/build/bench/bench/bench_kmeans}
iters=10
threads=$(nproc)
seed=1234

die() { echo "compare_kmeans.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --no-extra) extra=0 ;;
    --bin) [ $# -ge 2 ] || die "--bin: missing value"; bin=$2; shift ;;
    --iters) [ $# -ge 2 ] || die "--iters: missing value"; iters=$2; shift ;;
    --threads) [ $# -ge 2 ] || die "--threads: missing value"; threads=$2; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
[ -x "$bin" ] || die "$bin not found or not executable: build it first" \
  "(cmake -S . -B build/bench -G Ninja && cmake --build build/bench --target bench_kmeans)"
python3 -c 'import faiss, numpy' 2>/dev/null || die "python3 with numpy and faiss is needed"

faiss_env=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE)
py=(python3 "$here/kmeans_faiss.py")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/compare_kmeans.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# "N D K" per row.
if [ "$quick" = 1 ]; then
  shapes=("50000 128 1024" "25000 1024 256")
else
  shapes=("200000 128 1024" "100000 1024 256")
fi

# field LINE KEY: the value of KEY=... in a RESULT/RATES/EVAL line.
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }
human() { awk -v n="$1" 'BEGIN { if (n % 1000000 == 0) printf "%dM", n / 1000000;
                                 else if (n % 1000 == 0) printf "%dk", n / 1000; else print n }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
ratio4() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.4f", a / b; else print "n/a" }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "n/a" }'; }
sci() { awk -v a="$1" 'BEGIN { printf "%.6g", a }'; }
f2() { awk -v a="$1" 'BEGIN { printf "%.2f", a }'; }
f3() { awk -v a="$1" 'BEGIN { printf "%.3f", a }'; }

# ---- machine rates ----------------------------------------------------------------------
echo "measuring machine rates..." >&2
rates_args=()
[ "$quick" = 1 ] && rates_args=(--quick)
rates_out=$("${faiss_env[@]}" python3 "$here/machine_rates.py" ${rates_args[@]+"${rates_args[@]}"})
echo "$rates_out" >&2
rates=$(grep '^RATES' <<<"$rates_out")
sgemm=$(field "$rates" sgemm_gflops)

# ---- the tables -------------------------------------------------------------------------
rows=()
phases=()
extras=()
simd="?"
for shape in "${shapes[@]}"; do
  read -r n d k <<<"$shape"
  label="N=$(human "$n") D=$d K=$k"
  data=$tmp/data.fbin
  echo "== $label: generating..." >&2
  "${py[@]}" gen --out "$data" --n "$n" --d "$d" --k "$k" --seed "$seed" >&2

  echo "   ours..." >&2
  ours_out=$("$bin" --data "$data" --k "$k" --iters "$iters" --threads "$threads" --seed "$seed" \
             --write-centroids "$tmp/ours.fbin")
  echo "$ours_out" >&2
  ours=$(grep '^RESULT' <<<"$ours_out")
  simd=$(field "$ours" simd)

  echo "   faiss Kmeans..." >&2
  faiss_out=$("${faiss_env[@]}" "${py[@]}" train --data "$data" --k "$k" --iters "$iters" \
              --threads "$threads" --seed "$seed" --write-centroids "$tmp/faiss.fbin")
  echo "$faiss_out" >&2
  theirs=$(grep '^RESULT' <<<"$faiss_out")

  files=("$tmp/ours.fbin" "$tmp/faiss.fbin")
  extra_results=()
  if [ "$extra" = 1 ]; then
    echo "   faiss Kmeans init=kmeans++..." >&2
    out=$("${faiss_env[@]}" "${py[@]}" train --data "$data" --k "$k" --iters "$iters" \
          --threads "$threads" --seed "$seed" --init kmeans++ --write-centroids "$tmp/faiss_pp.fbin")
    echo "$out" >&2
    extra_results+=("Kmeans init=kmeans++|$(grep '^RESULT' <<<"$out")|$tmp/faiss_pp.fbin")
    files+=("$tmp/faiss_pp.fbin")
    echo "   faiss SuperKmeans..." >&2
    out=$("${faiss_env[@]}" "${py[@]}" train --data "$data" --k "$k" --iters "$iters" \
          --threads "$threads" --seed "$seed" --algo superkmeans --write-centroids "$tmp/faiss_super.fbin")
    echo "$out" >&2
    if [ -f "$tmp/faiss_super.fbin" ]; then
      extra_results+=("SuperKmeans|$(grep '^RESULT' <<<"$out")|$tmp/faiss_super.fbin")
      files+=("$tmp/faiss_super.fbin")
    else
      extras+=("| $label | SuperKmeans | not available in this faiss | | |")
    fi
  fi

  echo "   exact evaluation..." >&2
  eval_out=$("${faiss_env[@]}" "${py[@]}" eval --data "$data" --threads "$threads" "${files[@]}")
  echo "$eval_out" >&2
  eval_of() { grep "^EVAL file=$1 " <<<"$eval_out"; }
  ours_eval=$(eval_of "$tmp/ours.fbin")
  faiss_eval=$(eval_of "$tmp/faiss.fbin")
  ours_inertia=$(field "$ours_eval" inertia)
  faiss_inertia=$(field "$faiss_eval" inertia)
  ours_s=$(field "$ours" seconds)
  faiss_s=$(field "$theirs" seconds)
  gflops=$(field "$ours" assign_gflops)
  rows+=("| $label | $(f3 "$ours_s") | $(f3 "$faiss_s") | $(ratio "$faiss_s" "$ours_s") | $(sci "$ours_inertia") | $(sci "$faiss_inertia") | $(ratio4 "$ours_inertia" "$faiss_inertia") | $(f2 "$gflops") | $(pct "$gflops" "$sgemm") |")
  seed_s=$(field "$ours" seed_seconds)
  phases+=("| $label | $(f3 "$seed_s") ($(pct "$seed_s" "$ours_s")) | $(f3 "$(field "$ours" lloyd_seconds)") | $(f3 "$(field "$ours" assign_seconds)") | $(f3 "$(field "$ours" update_seconds)") | $(f3 "$(field "$ours" final_assign_seconds)") | $(field "$ours_eval" empty) / $(field "$faiss_eval" empty) | $(f3 "$(field "$theirs" search_seconds)") | $(awk -v n="$n" -v d="$d" -v k="$k" -v i="$iters" -v s="$(field "$theirs" search_seconds)" 'BEGIN { if (s > 0) printf "%.2f", 2 * n * d * k * i / s / 1e9; else print "n/a" }') |")
  for e in ${extra_results[@]+"${extra_results[@]}"}; do
    IFS='|' read -r name res file <<<"$e"
    ev=$(eval_of "$file")
    extras+=("| $label | $name | $(f3 "$(field "$res" seconds)") | $(sci "$(field "$ev" inertia)") | $(ratio4 "$ours_inertia" "$(field "$ev" inertia)") |")
  done
  rm -f "$data" "$tmp"/*.fbin
done

# ---- report -----------------------------------------------------------------------------
echo
echo "Machine: $(nproc) CPUs ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)), threads used: $threads;" \
     "sgemm $(printf %.1f "$sgemm") GFLOP/s ($(field "$rates" blas) via numpy, machine_rates.py)."
echo "Ours: bench_kmeans f32, simd=$simd, greedy k-means++ on max(8*K, 2048) points, $iters updates + $((iters + 1)) assignments." \
     "FAISS $(python3 -c 'import faiss; print(faiss.__version__)') Kmeans(niter=$iters, random init, max_points_per_centroid=N)." \
     "Inertia: exact (float64) for both final centroid sets.$([ "$quick" = 1 ] && echo " (--quick: N/4)")"
echo
echo "| row | ours s | faiss s | speedup (faiss/ours) | ours inertia | faiss inertia | inertia ratio (ours/faiss) | ours assign GFLOP/s | % of sgemm |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
echo "Where our time goes (seconds; 'assignments' = all $((iters + 1)) set_centroids + assign calls):"
echo
echo "| row | ours seeding (share) | ours Lloyd | ours assignments | ours updates | ours final assignment | empty clusters ours / faiss | faiss assignment searches | faiss assign GFLOP/s |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${phases[@]}"
if [ "$extra" = 1 ]; then
  echo
  echo "Other FAISS variants (same data, iterations and evaluator):"
  echo
  echo "| row | faiss variant | s | inertia | ours/variant inertia |"
  echo "|---|---|---:|---:|---:|"
  printf '%s\n' "${extras[@]}"
fi
