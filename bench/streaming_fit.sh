#!/usr/bin/env bash
# streaming_fit.sh -- the out-of-core check: generate a large sharded dataset with
# `megatax gen`, fit a taxonomy on it under /usr/bin/time -v and report peak RSS (which must
# stay far below the data size: DESIGN.md promise 4, bounded memory), wall time and the fit's
# own points*level/s.
#
# usage: bench/streaming_fit.sh [--n N] [--dim D] [--shards S] [--dir DIR] [--bin PATH]
#                               [--threads T] [--keep] [-- extra megatax fit flags...]
#   --n N        vectors (default 10,000,000: ~5.1 GB of f32 at D=128)
#   --dim D      dimension (default 128)
#   --shards S   shards written by gen (default 20)
#   --dir DIR    work folder (default ${TMPDIR:-/tmp}/megatax-streaming-fit); DIR/data holds
#                the shards, DIR/taxonomy and DIR/paths the fit's output (removed first)
#   --bin PATH   megatax binary (default $MEGATAX_BIN or build/bench/tools/megatax)
#   --threads T  fit threads (default 0 = all)
#   --keep       keep DIR/data afterwards; a later run with the same --n --dim --shards reuses
#                it instead of generating again (default: DIR is removed at the end)
# Fit: --levels 3 --branching 32 --quiet (plus any flags after --). Free disk space at DIR is
# checked first: about 15 GB for the default size (scaled with N * D), else it refuses.
# Prints a summary and one machine-readable line:
#   STREAMING n=.. dim=.. shards=.. data_mib=.. peak_rss_mib=.. wall_seconds=..
#             fit_seconds=.. points_levels_per_second=.. gen_seconds=..
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
n=10000000
dim=128
shards=20
dir=${TMPDIR:-/tmp}/megatax-streaming-fit
bin=${MEGATAX_BIN:-$root/build/bench/tools/megatax}
threads=0
keep=0
fit_extra=()

die() { echo "streaming_fit.sh: $*" >&2; exit 2; }
is_int() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge "${2:-1}" ]; }
while [ $# -gt 0 ]; do
  case $1 in
    --n) [ $# -ge 2 ] || die "--n: missing value"; n=$2; shift ;;
    --dim) [ $# -ge 2 ] || die "--dim: missing value"; dim=$2; shift ;;
    --shards) [ $# -ge 2 ] || die "--shards: missing value"; shards=$2; shift ;;
    --dir) [ $# -ge 2 ] || die "--dir: missing value"; dir=$2; shift ;;
    --bin) [ $# -ge 2 ] || die "--bin: missing value"; bin=$2; shift ;;
    --threads) [ $# -ge 2 ] || die "--threads: missing value"; threads=$2; shift ;;
    --keep) keep=1 ;;
    --) shift; fit_extra=("$@"); break ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
is_int "$n" 1 || die "--n: expected an integer >= 1, got '$n'"
is_int "$dim" 1 || die "--dim: expected an integer >= 1, got '$dim'"
is_int "$shards" 1 || die "--shards: expected an integer >= 1, got '$shards'"
is_int "$threads" 0 || die "--threads: expected an integer >= 0, got '$threads'"
[ -x "$bin" ] || die "$bin not found or not executable: build it first" \
  "(cmake -S . -B build/bench -G Ninja && cmake --build build/bench --target megatax_cli)"
[ -x /usr/bin/time ] || die "/usr/bin/time not found: install the Debian package 'time'" \
  "(apt-get install -y time; scripts/setup.sh does it)"

# ---- disk space -------------------------------------------------------------------------
mkdir -p "$dir"
data=$dir/data
marker=$data/.streaming_fit_done
want="n=$n dim=$dim shards=$shards"
reuse=0
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then reuse=1; fi
# Data: n * dim * 4 bytes of shards + n * 3 * 4 of gen's labels; fit output: n * (3*4 paths
# + 8 ids + 4 dist) bytes. About 15 GB of free space asked for the default 10M x 128
# (~5.5 GB written), scaled with the size.
data_bytes=$(awk -v n="$n" -v d="$dim" 'BEGIN { printf "%.0f", n * d * 4 }')
need_kb=$(awk -v n="$n" -v d="$dim" -v r="$reuse" 'BEGIN {
  need = 15e9 * (n * (d * 4 + 36)) / (1e7 * (128 * 4 + 36));
  if (r) need -= n * (d * 4 + 12);             # the data is already there
  if (need < 1e9) need = 1e9;
  printf "%.0f", need / 1024 }')
free_kb=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
[ -n "$free_kb" ] || die "cannot read the free space of $dir with df"
if [ "$free_kb" -lt "$need_kb" ]; then
  rmdir "$dir" 2>/dev/null || true  # only if this run just made it (empty)
  die "not enough free disk space at $dir: $(awk -v k="$free_kb" 'BEGIN { printf "%.1f", k * 1024 / 1e9 }') GB free," \
      "$(awk -v k="$need_kb" 'BEGIN { printf "%.1f", k * 1024 / 1e9 }') GB needed for $n x $dim f32" \
      "(data + fit output, with margin); free some space or pass --dir on a larger disk"
fi
if [ "$keep" = 0 ]; then
  trap 'rm -rf "$data" "$dir/taxonomy" "$dir/paths" "$dir/time.log"; rmdir "$dir" 2>/dev/null || true' EXIT
fi

# ---- generate ---------------------------------------------------------------------------
gen_s=0
if [ "$reuse" = 1 ]; then
  echo "reusing $data ($want)" >&2
else
  rm -rf "$data"
  echo "generating $n x $dim f32 in $shards shards at $data..." >&2
  t0=$(date +%s.%N)
  "$bin" gen --out "$data" --n "$n" --dim "$dim" --levels 3 --branching 32 --shards "$shards" \
    --seed 1 >&2
  gen_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  echo "$want" >"$marker"
fi

# ---- fit --------------------------------------------------------------------------------
rm -rf "$dir/taxonomy" "$dir/paths"
time_log=$dir/time.log
echo "fitting: megatax fit --levels 3 --branching 32 --threads $threads --quiet ${fit_extra[*]-}" >&2
set +e
fit_out=$(/usr/bin/time -v -o "$time_log" "$bin" fit --input "$data/part-*.npy" \
          --storage "$dir/taxonomy" --output "$dir/paths" --levels 3 --branching 32 \
          --threads "$threads" --quiet ${fit_extra[@]+"${fit_extra[@]}"})
rc=$?
set -e
echo "$fit_out"
if [ "$rc" != 0 ]; then
  cat "$time_log" >&2
  die "megatax fit failed (exit status $rc)"
fi

rss_kb=$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): *//p' "$time_log")
wall=$(sed -n 's/^[[:space:]]*Elapsed (wall clock) time.*: *//p' "$time_log")
cpu=$(sed -n 's/^[[:space:]]*Percent of CPU this job got: *//p' "$time_log")
# h:mm:ss or m:ss(.cc) -> seconds
wall_s=$(awk -v t="$wall" 'BEGIN { n = split(t, p, ":"); s = 0; for (i = 1; i <= n; ++i) s = s * 60 + p[i]; printf "%.2f", s }')
rss_mib=$(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }')
data_mib=$(awk -v b="$data_bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
fit_line=$(grep '^fit:' <<<"$fit_out" || true)
fit_s=$(sed -n 's/^fit: [0-9]* points, \([0-9.]*\) s.*/\1/p' <<<"$fit_line")
rate=$(sed -n 's/.*, \([0-9.e+]*\) points\*level\/s.*/\1/p' <<<"$fit_line")

echo
echo "data: $n x $dim f32 in $shards shards, $data_mib MiB$([ "$reuse" = 1 ] && echo " (reused)" || echo ", generated in $gen_s s")"
echo "peak RSS: $rss_mib MiB ($(awk -v r="$rss_mib" -v d="$data_mib" 'BEGIN { printf "%.1f%%", 100 * r / d }') of the data size)"
echo "wall time: $wall_s s (CPU $cpu)"
echo "fit's own line: ${fit_line:-none}"
echo "STREAMING n=$n dim=$dim shards=$shards data_mib=$data_mib peak_rss_mib=$rss_mib" \
     "wall_seconds=$wall_s fit_seconds=${fit_s:-nan} points_levels_per_second=${rate:-nan} gen_seconds=$gen_s"
