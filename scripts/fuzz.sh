#!/usr/bin/env bash
# scripts/fuzz.sh [seconds] -- build the vector-file fuzz targets with clang + libFuzzer +
# ASan + UBSan in build/fuzz and run each for `seconds` (default 20) from a small seed
# corpus generated here. Corpora persist in build/fuzz/corpus/<target> (a later run
# continues from them); crashes are written to build/fuzz/artifacts/. Exit status is
# non-zero if any target finds a crash, leak, timeout or sanitizer report.
#
# Longer runs: scripts/fuzz.sh 3600, or run one target by hand, e.g.
#   build/fuzz/fuzz/fuzz_npy -jobs=8 -workers=8 -max_total_time=3600 \
#       build/fuzz/corpus/fuzz_npy build/fuzz/seeds/fuzz_npy
# (docs/formats.md, "Fuzzing").
set -euo pipefail

seconds="${1:-20}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MEGATAX_FUZZ_BUILD_DIR:-$root/build/fuzz}"
targets=(fuzz_npy fuzz_fbin fuzz_fvecs)

command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (libFuzzer needs clang)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "fuzz.sh: python3 not found (writes the seed corpus)" >&2; exit 2; }

mkdir -p "$build"
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMEGATAX_SANITIZE=address,undefined \
  -DMEGATAX_CUDA=OFF -DMEGATAX_ARROW=OFF -DMEGATAX_MPI=OFF -DMEGATAX_BUILD_TOOLS=OFF -DMEGATAX_BUILD_TESTS=OFF \
  -DMEGATAX_BUILD_FUZZERS=ON >"$build/configure.log" 2>&1 || {
  cat "$build/configure.log" >&2; exit 2; }
cmake --build "$build" --target "${targets[@]}"

# Seed corpus: a few valid and nearly valid files of each format (stdlib python only).
seeds="$build/seeds"
rm -rf "$seeds"
mkdir -p "$seeds" "$build/artifacts"
python3 - "$seeds" <<'PY'
import os, struct, sys
out = sys.argv[1]
def put(target, name, data):
    d = os.path.join(out, target); os.makedirs(d, exist_ok=True)
    open(os.path.join(d, name), 'wb').write(data)
def npy(descr, shape, data, version=1, fortran=False):
    dims = ', '.join(str(s) for s in shape) + (',' if len(shape) == 1 else '')
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (descr, fortran, dims)
    pre = 10 if version == 1 else 12
    d += ' ' * ((64 - (pre + len(d) + 1) % 64) % 64) + '\n'
    n = struct.pack('<H', len(d)) if version == 1 else struct.pack('<I', len(d))
    return b'\x93NUMPY' + bytes([version, 0]) + n + d.encode() + data
f32 = lambda vals: struct.pack('<%df' % len(vals), *vals)
put('fuzz_npy', 'f32', npy('<f4', (3, 4), f32([i * 0.5 for i in range(12)])))
put('fuzz_npy', 'f16v2', npy('<f2', (2, 5), bytes(range(20)), version=2))
put('fuzz_npy', 'u1v3', npy('|u1', (4, 3), bytes(range(12)), version=3))
put('fuzz_npy', 'empty', npy('<f4', (0, 8), b''))
put('fuzz_npy', 'nan', npy('<f4', (1, 2), f32([float('nan'), 1.0])))
put('fuzz_npy', 'rank1', npy('<f4', (3,), f32([1, 2, 3])))
put('fuzz_npy', 'fortran', npy('<f4', (2, 2), f32([1, 2, 3, 4]), fortran=True))
def fbin(n, d, payload): return struct.pack('<II', n, d) + payload
put('fuzz_fbin', 'f32', b'\x00' + fbin(3, 4, f32([float(i) for i in range(12)])))
put('fuzz_fbin', 'u8', b'\x01' + fbin(2, 3, bytes(range(6))))
put('fuzz_fbin', 'empty', b'\x00' + fbin(0, 16, b''))
put('fuzz_fbin', 'inf', b'\x00' + fbin(1, 2, f32([float('inf'), 0.0])))
def vecs(rows, fmt):
    return b''.join(struct.pack('<i', len(r)) + struct.pack('<%d%s' % (len(r), fmt), *r) for r in rows)
put('fuzz_fvecs', 'f32', b'\x00' + vecs([[1.0, 2.0, 3.0]] * 4, 'f'))
put('fuzz_fvecs', 'u8', b'\x01' + vecs([[1, 2, 3, 4]] * 3, 'B'))
put('fuzz_fvecs', 'baddim', b'\x00' + vecs([[1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0]], 'f'))
put('fuzz_fvecs', 'empty', b'\x00')
open(os.path.join(out, 'npy.dict'), 'w').write('\n'.join('"%s"' % t for t in [
    "\\x93NUMPY", "{", "}", "'descr'", "'fortran_order'", "'shape'", "'<f4'", "'<f2'",
    "'|u1'", "'<f8'", "True", "False", "None", ": ", ", ", "(", ")", "[", "]", "L"]) + '\n')
PY

status=0
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t"
  mkdir -p "$corpus"
  extra=()
  [[ "$t" == fuzz_npy ]] && extra+=("-dict=$seeds/npy.dict")
  echo "=== $t: ${seconds}s"
  if ! "$build/fuzz/$t" "${extra[@]}" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" \
        "$corpus" "$seeds/$t" >"$build/$t.log" 2>&1; then
    echo "!!! $t FAILED; log: $build/$t.log" >&2
    tail -n 40 "$build/$t.log" >&2
    status=1
  else
    grep -E "^stat::number_of_executed_units|^stat::new_units_added|cov:" "$build/$t.log" | tail -n 3
  fi
done
[[ $status -eq 0 ]] && echo "fuzz.sh: all targets ran ${seconds}s without findings"
exit $status
