#!/usr/bin/env python3
"""PyTorch's common practice for the shapes of bench_cuda, on the same card, same columns.

  assign: per row chunk, s = x @ c.T (bf16/f16 tensor cores), score = ||c||^2 - 2 s,
          (min, argmin) over the centroids, dist = ||x||^2 + min -- the matmul + argmin of
          Meta's data-curation k-means; the [chunk, K] matrix goes through memory.
  top-k:  per database chunk, s = q @ db.T, score = ||db||^2 - 2 s, topk(k) of the chunk, then
          topk of the candidates (database norms precomputed, as an index keeps them).
Reference rates measured here too: torch.matmul bf16 8192^3 (the peak) and a device-to-device
copy (the HBM floor). Chunks keep every temporary <= 2 GiB so all shapes fit in 80 GB.

  python3 bench/cuda/torch_peer.py [--reps R]
"""
import argparse
import statistics

import torch


def timed(fn, reps):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def chunked_l2_topk(qs, db, dbn, k, chunk):
    """The k nearest rows of db (squared norms dbn) to each query of qs, PyTorch's common
    practice: per database chunk s = qs @ db.T, score = ||db||^2 - 2 s, topk(k); then topk of
    the candidates. Returns (squared L2 distances, int64 ids), nearest first."""
    n = db.shape[0]
    cand_s, cand_i = [], []
    for r in range(0, n, chunk):
        s = dbn[None, r:r + chunk] - 2 * (qs @ db[r:r + chunk].T)
        v, i = s.topk(k, dim=1, largest=False)
        cand_s.append(v)
        cand_i.append(i + r)
    v, j = torch.cat(cand_s, 1).topk(k, dim=1, largest=False)
    ids = torch.cat(cand_i, 1).gather(1, j)
    return v + (qs.float() ** 2).sum(1, keepdim=True), ids


def human(v):
    if v % (1 << 20) == 0:
        return f"{v >> 20}M"
    if v >= 1000000 and v % 1000000 == 0:
        return f"{v // 1000000}M"
    if v >= 1024 and v % 1024 == 0:
        return f"{v >> 10}K"
    return str(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-f32", action="store_true")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # f32 stays f32, like our exact path
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    rows = []
    print(f"torch_peer: torch {torch.__version__}, {name}, median of {args.reps}")

    # HBM copy bandwidth and the matmul peak.
    src = torch.empty(1 << 30, dtype=torch.float16, device=dev)  # 2 GiB
    dst = torch.empty_like(src)
    copy_ms = timed(lambda: dst.copy_(src), args.reps)
    copy_bw = 2 * src.numel() * 2 / (copy_ms * 1e-3)
    del src, dst
    g = 8192
    a = torch.randn(g, g, device=dev, dtype=torch.bfloat16)
    b = torch.randn(g, g, device=dev, dtype=torch.bfloat16)
    mm_ms = timed(lambda: a @ b.T, max(args.reps, 10))
    peak = 2 * g**3 / (mm_ms * 1e-3) / 1e12
    del a, b
    print(f"HBM copy {copy_bw / 1e9:.0f} GB/s; torch.matmul bf16 8192^3 {mm_ms:.3f} ms, {peak:.0f} TFLOP/s")
    rows.append(("HBM copy bandwidth (copy_, 2B/t)", f"{copy_bw / 1e9:.0f} GB/s"))
    rows.append(("torch.matmul bf16 8192^3 (peak)", f"{mm_ms:.3f} ms  {peak:.0f} TFLOP/s"))

    print("\nassign: matmul + argmin vs matmul only")
    for n, k, d, dt in [(4 << 20, 1024, 1024, torch.bfloat16), (4 << 20, 1024, 1024, torch.float16),
                        (1 << 20, 16384, 1024, torch.bfloat16)]:
        x = torch.rand(n, d, device=dev, dtype=dt) * 2 - 1
        c = torch.rand(k, d, device=dev, dtype=dt) * 2 - 1
        chunk = min(n, (1 << 30) // k)

        def assign():
            cn = (c.float() ** 2).sum(1)
            labels = torch.empty(n, dtype=torch.int64, device=dev)
            dist = torch.empty(n, dtype=torch.float32, device=dev)
            for r in range(0, n, chunk):
                xc = x[r:r + chunk]
                s = cn[None, :] - 2 * (xc @ c.T)
                m, i = s.min(1)
                labels[r:r + chunk] = i
                dist[r:r + chunk] = (m + (xc.float() ** 2).sum(1)).clamp_min_(0)
            return labels, dist

        def matmul_only():
            for r in range(0, n, chunk):
                x[r:r + chunk] @ c.T

        ours = timed(assign, args.reps)
        floor = timed(matmul_only, args.reps)
        tf = 2 * n * k * d / (ours * 1e-3) / 1e12
        shape = f"{str(dt).replace('torch.', '').replace('bfloat16', 'bf16').replace('float16', 'f16')} N={human(n)} K={human(k)} D={d}"
        print(f"  {shape:32s} torch {ours:8.3f} ms {tf:5.0f} TFLOP/s = {100 * tf / peak:5.1f}% of peak | "
              f"matmul-only {floor:8.3f} ms (torch {ours / floor:.2f}x)")
        rows.append(("assign " + shape, f"{ours:8.3f} ms {tf:5.0f} TFLOP/s {100 * tf / peak:5.1f}% peak | "
                     f"matmul-only {floor:8.3f} ms, torch/matmul {ours / floor:.2f}x"))
        del x, c
        torch.cuda.empty_cache()

    print("\ntop-k: matmul + topk vs matmul only and the HBM read floor")
    dbs = [(10000000, 128, torch.bfloat16), (2000000, 1024, torch.bfloat16)]
    if not args.no_f32:
        dbs += [(10000000, 128, torch.float32), (2000000, 1024, torch.float32)]
    for n, d, dt in dbs:
        db = torch.rand(n, d, device=dev, dtype=dt) * 2 - 1
        dbn = (db.float() ** 2).sum(1)
        es = db.element_size()
        read_floor = n * d * es / copy_bw * 1e3
        for q in (1024, 16):
            qs = torch.rand(q, d, device=dev, dtype=dt) * 2 - 1
            chunk = min(n, (1 << 30) // q)

            def matmul_only():
                for r in range(0, n, chunk):
                    qs @ db[r:r + chunk].T

            floor = timed(matmul_only, args.reps)
            for k in (10, 100):
                def search():
                    return chunked_l2_topk(qs, db, dbn, k, chunk)

                ours = timed(search, args.reps)
                tname = str(dt).replace('torch.', '').replace('bfloat16', 'bf16').replace('float32', 'f32')
                shape = f"{tname} Q={q} N={human(n)} D={d} k={k}"
                print(f"  {shape:36s} torch {ours:8.3f} ms | matmul-only {floor:8.3f} ms (torch {ours / floor:.2f}x) | "
                      f"HBM read floor {read_floor:.3f} ms (torch at {100 * read_floor / ours:.0f}% of copy bandwidth)")
                rows.append(("topk " + shape, f"{ours:8.3f} ms | matmul-only {floor:8.3f} ms, torch/matmul "
                             f"{ours / floor:.2f}x | read floor {read_floor:.3f} ms, {100 * read_floor / ours:3.0f}% of BW"))
            del qs
        del db, dbn
        torch.cuda.empty_cache()

    print(f"\n==== torch_peer summary ({name}) ====")
    for what, cols in rows:
        print(f"{what:44s} {cols}")


if __name__ == "__main__":
    main()
