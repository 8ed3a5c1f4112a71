#!/usr/bin/env python3
"""FAISS k-means timed like bench/bench_kmeans, on the same data, plus an exact evaluator.

Subcommands:
  gen    writes a seeded Gaussian mixture as .fbin (uint32 n, uint32 d, then n * d float32):
         centres_per_k * k true centres ~ N(0, I), point = a uniformly drawn centre +
         noise * N(0, I). Both sides of bench/compare_kmeans.sh read this one file.
  train  faiss.Kmeans(d, k, niter, seed, max_points_per_centroid=n: every point is used,
         spherical=False) on a .fbin file, timing train() alone (the data is loaded first);
         --algo superkmeans runs faiss.SuperKmeans (ADSampling + PDX pruning) instead, when
         the installed faiss has it. --write-centroids saves the centroids as .fbin.
         Prints: RESULT impl=.. n=.. d=.. k=.. iters=.. threads=.. seconds=.. obj=..
                 init=.. faiss=..
         (obj = FAISS's objective of its last assignment, made *before* the last update: not
         the inertia of the returned centroids; use eval for that.)
  eval   the exact inertia of one or more centroid files on a .fbin dataset: nearest centroid
         by faiss.IndexFlatL2 search (k=1), then each point's squared distance to that centroid
         recomputed in float64 and summed in float64 (the float32 distances FAISS returns are
         summed too, as inertia_f32). Prints per file:
           EVAL file=.. n=.. d=.. k=.. inertia=.. inertia_f32=.. empty=.. max_cluster=..
"""
import argparse
import os
import sys
import time

import numpy as np


def nproc():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def read_fbin(path, rows=None):
    with open(path, "rb") as f:
        header = np.fromfile(f, dtype=np.uint32, count=2)
        if header.size != 2:
            sys.exit("kmeans_faiss: %s: truncated: no 8-byte header" % path)
        n, d = (int(v) for v in header)
        if rows is not None and rows > n:
            sys.exit("kmeans_faiss: %s holds %d rows, asked for %d" % (path, n, rows))
        take = n if rows is None else rows
        data = np.fromfile(f, dtype=np.float32, count=take * d)
    if data.size != take * d:
        sys.exit("kmeans_faiss: %s: truncated: expected %d floats, found %d"
                 % (path, take * d, data.size))
    return data.reshape(take, d)


def write_fbin(path, x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.array(x.shape, dtype=np.uint32).tofile(f)
        x.tofile(f)
    os.replace(tmp, path)


def gaussian_mixture(n, d, centres, noise, seed, chunk=1 << 16):
    """n x d float32: row i = centre[c_i] + noise * N(0, I), c_i uniform over `centres`."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, d), dtype=np.float32)
    which = rng.integers(0, centres, size=n)
    out = np.empty((n, d), dtype=np.float32)
    for b in range(0, n, chunk):
        e = min(n, b + chunk)
        rng.standard_normal((e - b, d), dtype=np.float32, out=out[b:e])
        out[b:e] *= np.float32(noise)
        out[b:e] += means[which[b:e]]
    return out


def cmd_gen(a):
    t0 = time.perf_counter()
    x = gaussian_mixture(a.n, a.d, a.centres_per_k * a.k, a.noise, a.seed)
    write_fbin(a.out, x)
    print("wrote %s: %d x %d float32, %d true centres, noise %g, seed %d (%.1f s)"
          % (a.out, a.n, a.d, a.centres_per_k * a.k, a.noise, a.seed, time.perf_counter() - t0))
    return 0


INIT_METHODS = {"random": "ClusteringInitMethod_RANDOM",
                "kmeans++": "ClusteringInitMethod_KMEANS_PLUS_PLUS",
                "afkmc2": "ClusteringInitMethod_AFK_MC2"}


def cmd_train(a):
    import faiss

    x = read_fbin(a.data, a.n)
    n, d = x.shape
    threads = a.threads or nproc()
    faiss.omp_set_num_threads(threads)
    kwargs = dict(niter=a.iters, seed=a.seed, max_points_per_centroid=n, spherical=False,
                  verbose=a.verbose)
    if a.algo == "superkmeans":
        if not hasattr(faiss, "SuperKmeans"):
            print("SuperKMeans: not available in faiss %s" % faiss.__version__)
            print("RESULT impl=faiss-superkmeans available=0 faiss=%s" % faiss.__version__)
            return 0
        km = faiss.SuperKmeans(d, a.k, **kwargs)
        init = "random"
    else:
        if a.init != "random":
            name = INIT_METHODS[a.init]
            if not hasattr(faiss, name):
                sys.exit("kmeans_faiss: --init %s: faiss %s has no %s"
                         % (a.init, faiss.__version__, name))
            kwargs["init_method"] = getattr(faiss, name)
        km = faiss.Kmeans(d, a.k, **kwargs)
        init = a.init
    t0 = time.perf_counter()
    km.train(x)
    seconds = time.perf_counter() - t0
    obj = float(km.obj[-1]) if len(km.obj) else float("nan")
    stats = km.iteration_stats
    search_s = stats[-1]["time_search"] if stats else float("nan")  # FAISS: cumulative
    impl = "faiss-" + a.algo
    print("%s: n=%d d=%d k=%d niter=%d threads=%d init=%s: train %.3f s (assignment searches "
          "%.3f s), last obj %.10g" % (impl, n, d, a.k, a.iters, threads, init, seconds,
                                       search_s, obj))
    print("RESULT impl=%s n=%d d=%d k=%d iters=%d threads=%d seconds=%.4f search_seconds=%.4f "
          "obj=%.10g init=%s faiss=%s" % (impl, n, d, a.k, a.iters, threads, seconds, search_s,
                                          obj, init, faiss.__version__))
    if a.write_centroids:
        write_fbin(a.write_centroids, km.centroids)
    return 0


def exact_inertia(x, centroids, chunk=8192):
    """(inertia in float64, inertia of FAISS's float32 distances, counts per centroid)."""
    import faiss

    k, d = centroids.shape
    index = faiss.IndexFlatL2(d)
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    c64 = centroids.astype(np.float64)
    total = 0.0
    total_f32 = 0.0
    counts = np.zeros(k, dtype=np.int64)
    for b in range(0, x.shape[0], chunk):
        xb = x[b:b + chunk]
        dist, ids = index.search(xb, 1)
        ids = ids[:, 0]
        if (ids < 0).any():
            sys.exit("kmeans_faiss: eval: search returned no neighbour (NaN centroids?)")
        diff = xb.astype(np.float64) - c64[ids]
        total += float(np.einsum("ij,ij->", diff, diff))
        total_f32 += float(dist[:, 0].astype(np.float64).sum())
        counts += np.bincount(ids, minlength=k)
    return total, total_f32, counts


def cmd_eval(a):
    import faiss

    faiss.omp_set_num_threads(a.threads or nproc())
    x = read_fbin(a.data, a.n)
    for path in a.centroids:
        c = read_fbin(path)
        if c.shape[1] != x.shape[1]:
            sys.exit("kmeans_faiss: eval: %s has dim %d, the data has %d"
                     % (path, c.shape[1], x.shape[1]))
        if not np.isfinite(c).all():
            sys.exit("kmeans_faiss: eval: %s holds non-finite values" % path)
        inertia, inertia_f32, counts = exact_inertia(x, c)
        print("EVAL file=%s n=%d d=%d k=%d inertia=%.12g inertia_f32=%.12g empty=%d "
              "max_cluster=%d" % (path, x.shape[0], x.shape[1], c.shape[0], inertia, inertia_f32,
                                  int((counts == 0).sum()), int(counts.max())))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    g = sub.add_parser("gen", help="write a seeded Gaussian mixture as .fbin")
    g.add_argument("--out", required=True)
    g.add_argument("--n", type=int, default=200000)
    g.add_argument("--d", type=int, default=128)
    g.add_argument("--k", type=int, default=1024, help="clusters the data is meant for")
    g.add_argument("--centres-per-k", type=int, default=4, help="true centres = this * k")
    g.add_argument("--noise", type=float, default=1.0, help="noise standard deviation")
    g.add_argument("--seed", type=int, default=1234)

    t = sub.add_parser("train", help="time faiss k-means on a .fbin file")
    t.add_argument("--data", required=True)
    t.add_argument("--n", type=int, default=None, help="use the first N rows (default all)")
    t.add_argument("--k", type=int, default=1024)
    t.add_argument("--iters", type=int, default=10)
    t.add_argument("--seed", type=int, default=1234)
    t.add_argument("--threads", type=int, default=0, help="0 = all cores")
    t.add_argument("--algo", choices=["kmeans", "superkmeans"], default="kmeans")
    t.add_argument("--init", choices=sorted(INIT_METHODS), default="random",
                   help="faiss.Kmeans init_method (default random, FAISS's default)")
    t.add_argument("--write-centroids", help="save the centroids as .fbin")
    t.add_argument("--verbose", action="store_true")

    e = sub.add_parser("eval", help="exact inertia of centroid files")
    e.add_argument("--data", required=True)
    e.add_argument("--n", type=int, default=None, help="use the first N rows (default all)")
    e.add_argument("--threads", type=int, default=0, help="0 = all cores")
    e.add_argument("centroids", nargs="+", help=".fbin centroid files")

    a = ap.parse_args()
    for name in ("n", "d", "k", "iters", "centres_per_k"):
        v = getattr(a, name, None)
        if v is not None and v < 1:
            ap.error("--%s must be >= 1" % name.replace("_", "-"))
    return {"gen": cmd_gen, "train": cmd_train, "eval": cmd_eval}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
