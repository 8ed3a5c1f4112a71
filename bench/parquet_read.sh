#!/usr/bin/env bash
# Parquet read throughput (issue 5): decoded float32 GB/s of one ZSTD Parquet file through our
# reader (Dataset + BatchReader, one thread) vs the same vectors in .npy vs pyarrow in Python;
# and S3 (a local moto server, tests/s3/moto_server.py) vs POSIX for both formats, on the same
# vectors as 16 shards (moto copies a whole object per ranged GET, so 1 GB objects would
# measure moto, not us).
#
#   bash bench/parquet_read.sh [BUILD_DIR] [GB] [DIM]     defaults: build/release 1.0 1024
#
# Needs a build with Arrow (MEGATAX_ARROW) and the Python packages of requirements.txt. Files
# live in a temporary folder (removed at the end) and are read from the page cache: this
# measures decoding and the storage path, not the disk.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build="${1:-build/release}"
gb="${2:-1.0}"
dim="${3:-1024}"
bin="$build/bench/bench_parquet_read"
[[ -x "$bin" ]] || { echo "no $bin (build with Arrow: cmake --build $build --target bench_parquet_read)"; exit 1; }
work=$(mktemp -d /tmp/megatax-parquet-bench-XXXXXX)
# Our reader, with its peak memory (bounded: it must not grow with the file).
ours() { /usr/bin/time -f "  (max RSS %M KB)" "$bin" "$@"; }
moto_pid=""
cleanup() {
  [[ -n "$moto_pid" ]] && kill "$moto_pid" 2>/dev/null && wait "$moto_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

echo "== data: $gb GB of float32, dim $dim"
python3 bench/parquet_read.py make "$work" "$gb" "$dim"
echo "== POSIX"
ours "$work/emb.npy"
ours "$work/emb.parquet"
ours "$work/shards/part-*.npy"
ours "$work/shards/part-*.parquet"
echo "== pyarrow (Python)"
python3 bench/parquet_read.py pyarrow "$work/emb.parquet"

echo "== S3 (moto on 127.0.0.1, signatures checked)"
if ! python3 -c 'import moto, boto3, flask' 2>/dev/null; then
  echo "no moto/boto3/flask in python3: S3 part not run (pip install -r requirements.txt)"
  exit 0
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 tests/s3/moto_server.py "$port" "$work/ready" bench > "$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 200); do [[ -f "$work/ready" ]] && break; sleep 0.1; done
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1
AWS_ACCESS_KEY_ID=$(sed -n 1p "$work/ready")
AWS_SECRET_ACCESS_KEY=$(sed -n 2p "$work/ready")
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
for f in "$work"/shards/*; do
  python3 tests/s3/s3_tool.py put bench "shards/$(basename "$f")" "$f"
done
ours "s3://bench/shards/part-*.npy"
ours "s3://bench/shards/part-*.parquet"
