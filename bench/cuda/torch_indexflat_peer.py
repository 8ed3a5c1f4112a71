#!/usr/bin/env python3
"""PyTorch as an end-to-end peer of `bench_indexflat --backend cuda`: the same shapes, the
same flow -- the database handed over once from host memory (f32 rows, kept on the GPU in
the index dtype with its squared norms), then searches whose queries come from host memory
(f32) and whose k nearest ids and squared L2 distances go back to host memory.

  search: queries host -> device, cast to the dtype; torch_peer.py's chunked matmul + topk
          (dist = score + ||q||^2, clamped at 0); results device -> host (numpy). Chunks
          keep [q, chunk] <= 2 GiB.
Timed with the host's clock around each whole search (as bench_indexflat times
IndexFlat::search), after --warmup untimed ones; rows drawn from N(0, 1) like
bench_indexflat's default. Prints one RESULT line per shape.

  python3 bench/cuda/torch_indexflat_peer.py --n 2000000 --d 1024 --q 1024 --k 10 \\
      [--dtype bf16|f16|f32] [--iters 10] [--warmup 1]
"""
import argparse
import time

import torch

from torch_peer import chunked_l2_topk  # the same script directory


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--d", type=int, required=True)
    ap.add_argument("--q", type=int, required=True)
    ap.add_argument("--k", type=int, nargs="+", required=True)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    dt = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    dev = torch.device("cuda")
    n, d, q = args.n, args.d, args.q
    gen = torch.Generator(device=dev).manual_seed(1)
    # Host f32 rows (drawn on the GPU for speed, then moved to host memory).
    host_db = torch.empty(n, d, dtype=torch.float32)
    step = max(1, (1 << 28) // d)
    for r in range(0, n, step):
        host_db[r:r + step] = torch.randn(min(step, n - r), d, device=dev, generator=gen).cpu()
    host_q = torch.randn(q, d, device=dev, generator=gen).cpu().numpy()

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    db = torch.empty(n, d, dtype=dt, device=dev)
    for r in range(0, n, step):
        db[r:r + step] = host_db[r:r + step].to(dev).to(dt)
    dbn = (db.float() ** 2).sum(1)
    torch.cuda.synchronize()
    add_ms = (time.perf_counter() - t0) * 1e3
    del host_db
    chunk = min(n, (1 << 30) // q)

    for k in args.k:
        def search():
            qs = torch.from_numpy(host_q).to(dev).to(dt)
            dist, ids = chunked_l2_topk(qs, db, dbn, k, chunk)
            return dist.clamp_min_(0).cpu().numpy(), ids.cpu().numpy()

        for _ in range(args.warmup):
            search()
        times = []
        for _ in range(args.iters):
            t = time.perf_counter()
            search()
            times.append((time.perf_counter() - t) * 1e3)
        avg, best = sum(times) / len(times), min(times)
        print(f"RESULT peer=torch q={q} n={n} d={d} k={k} dtype={args.dtype} avg_ms={avg:.4f} min_ms={best:.4f} "
              f"add_ms={add_ms:.1f} device={torch.cuda.get_device_name(0).replace(' ', '_')}", flush=True)


if __name__ == "__main__":
    main()
