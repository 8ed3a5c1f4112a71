#!/usr/bin/env python3
"""Measures this machine's peak-ish rates, the yardsticks for bench_indexflat's numbers.

- sgemm GFLOP/s: numpy float32 matmul (the BLAS numpy links) on a square 2048^3 product and on
  the shapes of exact k-NN (Q x D @ D x N: 128x128 @ 128x1M and 128x1024 @ 1024x200k), best of
  several runs, all cores.
- memory read GB/s: numpy sum over a large float32 array split over one thread per core
  (numpy releases the GIL in reductions), and a C read loop (OpenMP, compiled on the fly with
  `cc` if there is one), best of several runs.

Prints a human report and one machine-readable line:
  RATES threads=.. sgemm_gflops=.. sgemm_square_gflops=.. sgemm_knn_d128_gflops=..
        sgemm_knn_d1024_gflops=.. mem_gbps=.. numpy_sum_gbps=.. c_read_gbps=.. blas=..
(sgemm_gflops and mem_gbps are the best of their kind; c_read_gbps is "nan" without a
compiler.)
"""
import argparse
import concurrent.futures
import ctypes
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import contextlib

import numpy as np


def nproc():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def openblas_corename():
    """The kernel family OpenBLAS picked at run time (DYNAMIC_ARCH builds), or None."""
    import glob

    here = os.path.dirname(np.__file__)
    candidates = glob.glob(os.path.join(here, "..", "numpy.libs", "*openblas*.so*"))
    candidates += glob.glob(os.path.join(here, ".libs", "*openblas*.so*"))
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                     "openblas_get_corename64_", "openblas_get_corename"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode()
    return None


def blas_description(threads):
    try:
        import threadpoolctl  # optional

        info = threadpoolctl.threadpool_info()
        blas = [i for i in info if i.get("user_api") == "blas"]
        if blas:
            b = blas[0]
            return "%s %s (%s, %s threads)" % (
                b.get("internal_api"), b.get("version"), b.get("architecture"),
                b.get("num_threads"))
    except ImportError:
        pass
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        text = "%s %s" % (blas.get("name", "?"), blas.get("version", "?"))
        conf = blas.get("openblas configuration")
        if conf:
            text += " [%s]" % conf
        return text
    except TypeError:  # numpy < 1.25: show_config has no mode
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            np.show_config()
        lines = [l.strip() for l in buf.getvalue().splitlines() if "blas" in l.lower()]
        return "; ".join(lines[:3]) or "unknown"


def best_time(fn, repeats):
    fn()  # warm-up: page faults, BLAS thread start
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def sgemm_gflops(m, k, n, repeats, rng):
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c = np.empty((m, n), dtype=np.float32)
    t = best_time(lambda: np.matmul(a, b, out=c), repeats)
    return 2.0 * m * k * n / t / 1e9


def numpy_sum_gbps(array, threads, repeats):
    chunks = np.array_split(array, threads * 4)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        def run():
            list(pool.map(np.sum, chunks))
        t = best_time(run, repeats)
    return array.nbytes / t / 1e9


C_READ = r"""
#include <stddef.h>
#include <stdint.h>
/* Sums n floats with 8 independent accumulators (vectorised at -O3), all threads. */
double megatax_read(const float* x, size_t n) {
  double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
  for (size_t block = 0; block < n / 4096; ++block) {
    float acc[16] = {0};
    const float* p = x + block * 4096;
    for (size_t i = 0; i < 4096; i += 16)
      for (int j = 0; j < 16; ++j) acc[j] += p[i + j];
    float s = 0;
    for (int j = 0; j < 16; ++j) s += acc[j];
    total += s;
  }
  return total;
}
"""


def c_read_gbps(array, threads, repeats):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return float("nan"), "no C compiler"
    with tempfile.TemporaryDirectory() as tmp:
        src, lib = os.path.join(tmp, "read.c"), os.path.join(tmp, "read.so")
        with open(src, "w") as f:
            f.write(C_READ)
        cmd = [cc, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", src, "-o", lib]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            return float("nan"), "compile failed: " + r.stderr.strip().splitlines()[-1]
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        so = ctypes.CDLL(lib)
        so.megatax_read.restype = ctypes.c_double
        so.megatax_read.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        ptr = array.ctypes.data
        t = best_time(lambda: so.megatax_read(ptr, array.size), repeats)
        return array.nbytes / t / 1e9, "cc -O3 -march=native -fopenmp"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller arrays, fewer repeats")
    ap.add_argument("--mem-gib", type=float, default=None,
                    help="array size for the bandwidth test (default 2, --quick 1)")
    ap.add_argument("--repeats", type=int, default=None, help="runs per measure (best kept)")
    args = ap.parse_args()
    threads = nproc()
    repeats = args.repeats or (3 if args.quick else 5)
    mem_gib = args.mem_gib or (1.0 if args.quick else 2.0)
    rng = np.random.default_rng(0)

    blas = blas_description(threads)
    core = openblas_corename()
    if core:
        blas += " core=" + core
    print("machine: %d threads, numpy %s, BLAS: %s" % (threads, np.__version__, blas))
    square = sgemm_gflops(2048, 2048, 2048, repeats, rng)
    print("sgemm 2048x2048 @ 2048x2048: %.1f GFLOP/s" % square)
    knn_n1 = 250_000 if args.quick else 1_000_000
    knn_n2 = 50_000 if args.quick else 200_000
    knn128 = sgemm_gflops(128, 128, knn_n1, repeats, rng)
    print("sgemm 128x128 @ 128x%d: %.1f GFLOP/s" % (knn_n1, knn128))
    knn1024 = sgemm_gflops(128, 1024, knn_n2, repeats, rng)
    print("sgemm 128x1024 @ 1024x%d: %.1f GFLOP/s" % (knn_n2, knn1024))

    n = int(mem_gib * (1 << 30) / 4) // 4096 * 4096
    array = np.ones(n, dtype=np.float32)  # touched: pages are mapped before timing
    np_sum = numpy_sum_gbps(array, threads, repeats)
    print("memory read, numpy sum over %.1f GiB (%d threads): %.2f GB/s" % (mem_gib, threads, np_sum))
    c_read, how = c_read_gbps(array, threads, repeats)
    print("memory read, C loop over %.1f GiB (%s): %.2f GB/s" % (mem_gib, how, c_read))
    del array

    sgemm_best = max(square, knn128, knn1024)
    mem_best = max(x for x in (np_sum, c_read) if x == x)  # skip nan
    print("RATES threads=%d sgemm_gflops=%.2f sgemm_square_gflops=%.2f sgemm_knn_d128_gflops=%.2f "
          "sgemm_knn_d1024_gflops=%.2f mem_gbps=%.3f numpy_sum_gbps=%.3f c_read_gbps=%.3f blas=%s"
          % (threads, sgemm_best, square, knn128, knn1024, mem_best, np_sum, c_read,
             blas.split()[0] if blas else "unknown"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
