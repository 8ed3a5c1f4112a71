#!/usr/bin/env python3
"""FAISS IndexFlatL2 / IndexFlatIP timed like tools/bench_indexflat, on the same data.

Data: generated with numpy (seeded; normal or uniform [0, 1)) or read from .fbin files
(big-ann-benchmarks layout: uint32 n, uint32 d, then n * d float32 row-major). With
--write-base / --write-queries the generated data is saved as .fbin so that bench_indexflat
(--base / --queries) measures exactly the same vectors; --generate-only stops there.
With --base/--queries, --n/--q take the first rows (default: all rows).

Prints the same RESULT line as bench_indexflat:
  RESULT q=.. n=.. d=.. k=.. dtype=f32 threads=.. simd=faiss-<opt> avg_ms=.. min_ms=.. qps=..
         gflops=.. gbps=.. metric=..
--ids-out FILE writes the last search's ids as bench_indexflat does: uint32 nq, uint32 k,
then nq * k int64.
"""
import argparse
import os
import sys
import time

import numpy as np


def read_fbin(path, rows=None):
    with open(path, "rb") as f:
        n, d = (int(v) for v in np.fromfile(f, dtype=np.uint32, count=2))
        if rows is not None and rows > n:
            sys.exit("faiss_bench: %s holds %d rows, asked for %d" % (path, n, rows))
        take = n if rows is None else rows
        data = np.fromfile(f, dtype=np.float32, count=take * d)
    if data.size != take * d:
        sys.exit("faiss_bench: %s: truncated: expected %d floats, found %d"
                 % (path, take * d, data.size))
    return data.reshape(take, d)


def write_fbin(path, x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    with open(path, "wb") as f:
        np.array(x.shape, dtype=np.uint32).tofile(f)
        x.tofile(f)


def generate(rows, d, seed, stream, dist):
    rng = np.random.default_rng([seed, stream])
    if dist == "uniform":
        return rng.random((rows, d), dtype=np.float32)
    return rng.standard_normal((rows, d), dtype=np.float32)


def nproc():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--q", type=int, default=None, help="queries (default 128)")
    ap.add_argument("--n", type=int, default=None, help="database vectors (default 200000)")
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="0 = all cores")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--metric", choices=["l2", "ip"], default="l2")
    ap.add_argument("--dist", choices=["normal", "uniform"], default="normal")
    ap.add_argument("--base", help="read the database from this .fbin")
    ap.add_argument("--queries", help="read the queries from this .fbin")
    ap.add_argument("--write-base", help="save the generated database as .fbin")
    ap.add_argument("--write-queries", help="save the generated queries as .fbin")
    ap.add_argument("--generate-only", action="store_true",
                    help="write the data files and exit (FAISS is not imported)")
    ap.add_argument("--ids-out", help="write the last search's ids here")
    ap.add_argument("--blas-threshold", type=int, default=None,
                    help="set faiss.cvar.distance_compute_blas_threshold (queries from which "
                         "FAISS computes distances with sgemm; its default is kept otherwise)")
    a = ap.parse_args()
    for name in ("q", "n", "d", "k", "iters"):
        v = getattr(a, name)
        if v is not None and v < 1:
            ap.error("--%s must be >= 1, got %d" % (name, v))

    t0 = time.perf_counter()
    if a.base:
        xb = read_fbin(a.base, a.n)
    else:
        xb = generate(a.n or 200000, a.d, a.seed, 0, a.dist)
        if a.write_base:
            write_fbin(a.write_base, xb)
    if a.queries:
        xq = read_fbin(a.queries, a.q)
    else:
        xq = generate(a.q or 128, xb.shape[1], a.seed, 1, a.dist)
        if a.write_queries:
            write_fbin(a.write_queries, xq)
    if xq.shape[1] != xb.shape[1]:
        sys.exit("faiss_bench: queries have dim %d, the database has %d"
                 % (xq.shape[1], xb.shape[1]))
    data_ms = (time.perf_counter() - t0) * 1e3
    if a.generate_only:
        print("generated n=%d q=%d d=%d in %.0f ms" % (xb.shape[0], xq.shape[0], xb.shape[1], data_ms))
        return 0

    import faiss  # only now: --generate-only works without it

    threads = a.threads or nproc()
    faiss.omp_set_num_threads(threads)
    if a.blas_threshold is not None:
        faiss.cvar.distance_compute_blas_threshold = a.blas_threshold
    n, d = xb.shape
    q = xq.shape[0]
    index = faiss.IndexFlatL2(d) if a.metric == "l2" else faiss.IndexFlatIP(d)
    t0 = time.perf_counter()
    index.add(xb)
    add_ms = (time.perf_counter() - t0) * 1e3
    opt = faiss.get_compile_options().split()
    level = next((o for o in ("AVX512_SPR", "AVX512", "AVX2", "SVE", "NEON") if o in opt), "generic")
    print("config: faiss %s q=%d n=%d d=%d k=%d metric=%s threads=%d compile=%s "
          "blas_threshold=%d" % (faiss.__version__, q, n, d, a.k, a.metric, threads, " ".join(opt),
                                 faiss.cvar.distance_compute_blas_threshold))
    print("data: %.1f ms, add: %.1f ms" % (data_ms, add_ms))

    for _ in range(a.warmup):
        index.search(xq, a.k)
    times = []
    ids = None
    for _ in range(a.iters):
        t0 = time.perf_counter()
        _, ids = index.search(xq, a.k)
        times.append(time.perf_counter() - t0)
    avg = sum(times) / len(times)
    mn = min(times)
    qps = q / avg
    gflops = 2.0 * q * n * d / avg / 1e9
    gbps = n * d * 4.0 / avg / 1e9
    print("search: avg %.3f ms, min %.3f ms, %.1f QPS, %.1f GFLOP/s, %.2f GB/s"
          % (avg * 1e3, mn * 1e3, qps, gflops, gbps))
    print("RESULT q=%d n=%d d=%d k=%d dtype=f32 threads=%d simd=faiss-%s avg_ms=%.4f min_ms=%.4f "
          "qps=%.2f gflops=%.2f gbps=%.3f metric=%s"
          % (q, n, d, a.k, threads, level.lower(), avg * 1e3, mn * 1e3, qps, gflops, gbps,
             a.metric))
    if a.ids_out:
        with open(a.ids_out, "wb") as f:
            np.array([q, a.k], dtype=np.uint32).tofile(f)
            np.ascontiguousarray(ids, dtype=np.int64).tofile(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
