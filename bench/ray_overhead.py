#!/usr/bin/env python3
"""Ray orchestration overhead per level vs the MPI executor, same data, 2 workers (issue 8).

Fits one generated dataset (default 2,000,000 x 64 f32 in 16 shards, 3 levels of 16) with:

  local   megatax fit --executor local --threads 2        (one process, for reference)
  mpi     mpirun -np 2 megatax fit --threads 1            (2 ranks x 1 thread)
  ray     mega_taxonomy.ray.fit_on_ray(num_workers=2, threads=1)  (2 actors x 1 thread, on
          a local Ray instance started once before the runs)

`--repeat` times each, checks that every run wrote the same tree and outputs (byte for
byte), and prints per level the median seconds (the manifest's per-level "seconds", timed by
worker 0 from the start of the level's training to its commit: the same clock for every
executor) and Ray's extra seconds over MPI per level and per shard (each level is one pass
over every shard). "wall" also counts starting the processes (mpirun) or the actors (Ray;
not ray.init, timed apart). The MPI command comes from a CMake build with MPI (--bin).

Usage: python3 bench/ray_overhead.py [--n 2000000] [--dim 64] [--shards 16] [--levels 3]
                                     [--branching 16] [--repeat 3] [--bin PATH/TO/megatax]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def level_seconds(storage: Path) -> list:
    manifest = json.loads((storage / "taxonomy.json").read_text())
    assert manifest["status"] == "complete", storage
    return [lv["seconds"] for lv in manifest["levels"]]


def same_tree(a: Path, b: Path, out_a: Path, out_b: Path, levels: int) -> None:
    for level in range(1, levels + 1):
        for name in ("centroids.npy", "nodes.npy", "inertia.npy"):
            if not filecmp.cmp(a / f"level-{level}" / name, b / f"level-{level}" / name,
                               shallow=False):
                sys.exit(f"ray_overhead: {b}/level-{level}/{name} differs from {a}")
    names = sorted(p.name for p in out_a.iterdir())
    if names != sorted(p.name for p in out_b.iterdir()):
        sys.exit(f"ray_overhead: {out_b} has other files than {out_a}")
    for name in names:
        if not filecmp.cmp(out_a / name, out_b / name, shallow=False):
            sys.exit(f"ray_overhead: {out_b}/{name} differs")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--branching", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--bin", default=str(REPO / "build" / "release" / "tools" / "megatax"))
    a = p.parse_args()
    if not os.access(a.bin, os.X_OK):
        sys.exit(f"ray_overhead: {a.bin} is not built (cmake --build build/release)")

    # Before Ray is imported: a one-machine instance on 127.0.0.1, no usage statistics.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from mega_taxonomy.ray import fit_on_ray

    work = Path(tempfile.mkdtemp(prefix="ray-overhead-"))
    try:
        subprocess.run([a.bin, "gen", "--out", str(work / "data"), "--n", str(a.n), "--dim",
                        str(a.dim), "--levels", str(a.levels), "--branching", str(a.branching),
                        "--shards", str(a.shards), "--seed", "1"],
                       check=True, stdout=subprocess.DEVNULL)
        data = str(work / "data" / "part-*.npy")
        fit = ["fit", "--input", data, "--levels", str(a.levels), "--branching",
               str(a.branching), "--sample-per-centroid", "128", "--quiet"]
        config = dict(n_levels=a.levels, branching_factor=a.branching, sample_per_centroid=128,
                      threads=1)
        t = time.monotonic()
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
        ray_init = time.monotonic() - t

        runs = {"local": [], "mpi": [], "ray": []}  # (per-level seconds, wall)
        transport = {}
        for r in range(a.repeat):
            for kind in ("local", "mpi", "ray"):
                tax, out = work / f"{kind}-{r}", work / f"{kind}-{r}-out"
                t = time.monotonic()
                if kind == "local":
                    subprocess.run([a.bin, *fit, "--executor", "local", "--threads", "2",
                                    "--storage", str(tax), "--output", str(out)],
                                   check=True, stdout=subprocess.DEVNULL)
                elif kind == "mpi":
                    subprocess.run(["mpirun", "--allow-run-as-root", "--oversubscribe",
                                    "--bind-to", "none", "-np", "2", a.bin, *fit, "--threads",
                                    "1", "--executor", "mpi", "--storage", str(tax),
                                    "--output", str(out)],
                                   check=True, stdout=subprocess.DEVNULL)
                else:
                    report = fit_on_ray(dict(config, storage_uri=str(tax)), data, str(out),
                                        num_workers=2, progress=False)
                    transport = report["transport"]
                wall = time.monotonic() - t
                runs[kind].append((level_seconds(tax), wall))
                same_tree(work / "local-0", tax, work / "local-0-out", out, a.levels)
                if r > 0 or kind != "local":
                    shutil.rmtree(tax)
                    shutil.rmtree(out)
        ray.shutdown()

        def med(kind: str, level: int) -> float:
            return statistics.median(run[0][level] for run in runs[kind])

        def med_sum(kind: str) -> float:
            return statistics.median(sum(run[0]) for run in runs[kind])

        def med_wall(kind: str) -> float:
            return statistics.median(run[1] for run in runs[kind])

        print(f"data: {a.n} x {a.dim} f32 in {a.shards} shards; {a.levels} levels of "
              f"{a.branching}; median of {a.repeat} runs; trees and outputs identical: yes")
        print(f"ray.init (once, not in the runs): {ray_init:.2f} s; per Ray fit: "
              f"{transport.get('allgathers', 0)} collectives, "
              f"{transport.get('allgather_bytes', 0) / 1e6:.2f} MB sent to the coordinator, "
              f"{transport.get('shard_claims', 0)} shard claims")
        print()
        print("| level | local 1x2 threads s | MPI 2x1 s | Ray 2x1 s | Ray - MPI s | "
              "Ray - MPI per shard ms |")
        print("|---:|---:|---:|---:|---:|---:|")
        for level in range(a.levels):
            extra = med("ray", level) - med("mpi", level)
            print(f"| {level + 1} | {med('local', level):.3f} | {med('mpi', level):.3f} | "
                  f"{med('ray', level):.3f} | {extra:+.3f} | {1e3 * extra / a.shards:+.1f} |")
        extra = med_sum("ray") - med_sum("mpi")
        print(f"| all levels | {med_sum('local'):.3f} | {med_sum('mpi'):.3f} | "
              f"{med_sum('ray'):.3f} | {extra:+.3f} | "
              f"{1e3 * extra / (a.shards * a.levels):+.1f} |")
        print(f"| wall (with start-up) | {med_wall('local'):.2f} | {med_wall('mpi'):.2f} | "
              f"{med_wall('ray'):.2f} | {med_wall('ray') - med_wall('mpi'):+.2f} | |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
