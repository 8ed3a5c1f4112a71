#!/usr/bin/env python3
"""Per-call overhead of mega_taxonomy's IndexFlatL2.search from Python (Q = 1).

Times one-query searches (default N = 1000, D = 128, k = 10: so little work that the fixed
cost of a call shows) three ways, on the same vectors, in one run:

  python   mega_taxonomy.IndexFlatL2.search(xq, k) in a Python loop (the installed package)
  c++      the same IndexFlat::search called directly in C++: tools/bench_indexflat reading
           the same vectors from .fbin files (--q 1 --iters I). Its per-search time includes
           two steady_clock reads (~40 ns); it runs in its own process with the same build
           settings as the wheel (built from build/wheel unless --bench-indexflat is given).
  faiss    faiss.IndexFlatL2.search from Python (faiss-cpu from PyPI)

for 1 thread (the fair case for one query) and for all hardware threads. The "overhead"
column is python - c++: what the binding adds per call (argument checks, two new numpy
arrays, GIL release, the index lock).

Usage: python3 bench/python_overhead.py [--n 1000] [--d 128] [--k 10] [--calls 20000]
                                        [--bench-indexflat PATH] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def write_fbin(path: Path, x: np.ndarray) -> None:
    x = np.ascontiguousarray(x, dtype=np.float32)
    with open(path, "wb") as f:
        np.array(x.shape, dtype=np.uint32).tofile(f)
        x.tofile(f)


def per_call_us(fn, calls: int, repeats: int = 5) -> float:
    """Median over `repeats` runs of the mean time of one call, in microseconds."""
    for _ in range(min(calls, 1000)):  # warm-up
        fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(runs)


def find_bench_indexflat(explicit: str | None) -> str:
    if explicit:
        return explicit
    wheel_tree = REPO / "build" / "wheel"
    if (wheel_tree / "CMakeCache.txt").exists():
        # Same compiler, flags and build type as the installed extension.
        subprocess.run(["cmake", "--build", str(wheel_tree), "--target", "bench_indexflat",
                        "-j", os.environ.get("MEGATAX_JOBS", "2")], check=True,
                       stdout=subprocess.DEVNULL)
        return str(wheel_tree / "tools" / "bench_indexflat")
    for tree in ("release", "dev"):
        exe = REPO / "build" / tree / "tools" / "bench_indexflat"
        if exe.exists():
            return str(exe)
    sys.exit("python_overhead: no bench_indexflat: build the wheel first "
             "(scripts/test-python.sh) or pass --bench-indexflat")


def cpp_per_call_us(exe: str, base: Path, queries: Path, k: int, calls: int, threads: int) -> float:
    runs = []
    for _ in range(3):
        out = subprocess.run([exe, "--base", str(base), "--queries", str(queries), "--q", "1",
                              "--k", str(k), "--iters", str(calls), "--warmup", "1000",
                              "--threads", str(threads)],
                             check=True, capture_output=True, text=True).stdout
        runs.append(float(re.search(r"^RESULT .*avg_ms=([0-9.]+)", out, re.M).group(1)) * 1e3)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--bench-indexflat")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = ap.parse_args()

    import mega_taxonomy as mt

    try:
        import faiss
    except ImportError:
        faiss = None

    rng = np.random.default_rng(1234)
    xb = rng.standard_normal((args.n, args.d), dtype=np.float32)
    xq = rng.standard_normal((1, args.d), dtype=np.float32)
    exe = find_bench_indexflat(args.bench_indexflat)

    ours = mt.IndexFlatL2(args.d)
    ours.add(xb)
    if faiss is not None:
        theirs = faiss.IndexFlatL2(args.d)
        theirs.add(xb)
        D1, I1 = ours.search(xq, args.k)
        D2, I2 = theirs.search(xq, args.k)
        assert (I1 == I2).all(), "mega_taxonomy and faiss disagree on the neighbours"

    hw = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base, queries = Path(tmp) / "base.fbin", Path(tmp) / "queries.fbin"
        write_fbin(base, xb)
        write_fbin(queries, xq)
        for threads in (1, 0):
            label = "1" if threads == 1 else f"all ({hw})"
            py = per_call_us(lambda: ours.search(xq, args.k, threads), args.calls)
            cpp = cpp_per_call_us(exe, base, queries, args.k, args.calls, threads)
            fa = None
            if faiss is not None:
                faiss.omp_set_num_threads(1 if threads == 1 else hw)
                fa = per_call_us(lambda: theirs.search(xq, args.k), args.calls)
            rows.append((label, py, cpp, py - cpp, fa))

    print(f"IndexFlatL2.search, Q=1, N={args.n}, D={args.d}, k={args.k}, f32; "
          f"{args.calls} calls x 5 (median of mean per call); mega_taxonomy "
          f"{mt.__version__}, faiss {faiss.__version__ if faiss else 'absent'}, "
          f"numpy {np.__version__}, Python {sys.version.split()[0]}")
    header = ("threads", "python us", "c++ us", "overhead us", "faiss-cpu us", "faiss/python")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("| --- " + "| ---: " * (len(header) - 1) + "|")
    else:
        print("%-10s %10s %10s %12s %13s %13s" % header)
    for label, py, cpp, over, fa in rows:
        cells = (label, f"{py:.2f}", f"{cpp:.2f}", f"{over:.2f}",
                 f"{fa:.2f}" if fa is not None else "-",
                 f"{fa / py:.2f}" if fa is not None else "-")
        if args.markdown:
            print("| " + " | ".join(cells) + " |")
        else:
            print("%-10s %10s %10s %12s %13s %13s" % cells)


if __name__ == "__main__":
    main()
