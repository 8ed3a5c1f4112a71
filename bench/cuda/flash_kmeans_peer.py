#!/usr/bin/env python3
"""Flash-KMeans (svg-project/flash-kmeans, Triton) as a peer, on the shapes of bench_cuda.

Measures, on this GPU with CUDA events (median of 5 after 2 warm-ups):
  - its fused assign (euclid_assign_triton), bf16 and f16, N=4M K=1024 D=1024 and N=1M K=16384;
  - its full Lloyd iteration (assign + sorted centroid update + shift), as its _euclid_iter;
  - torch.matmul bf16 8192^3 as the peak GEMM rate of the same run.
Prints a summary table in the format of bench_cuda / torch_peer.py.

Flash-KMeans is not a dependency: fetch its flash_kmeans/ folder into a git-ignored folder
(default third_party/flash-kmeans) and carry it to the GPU machine; never commit it.

usage: python3 bench/cuda/flash_kmeans_peer.py [--path third_party/flash-kmeans] [--quick]
"""
import argparse
import statistics
import sys
import types

import torch


def timed(fn, reps=5, warm=2):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        out.append(a.elapsed_time(b))
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--path", default="third_party/flash-kmeans")
    ap.add_argument("--quick", action="store_true", help="N/4")
    args = ap.parse_args()
    if "tqdm" not in sys.modules:  # its centroid update imports tqdm.trange only
        try:
            import tqdm  # noqa: F401
        except ImportError:
            stub = types.ModuleType("tqdm")
            stub.trange = range
            sys.modules["tqdm"] = stub
    sys.path.insert(0, args.path)
    from flash_kmeans.assign_euclid_triton import euclid_assign_triton
    from flash_kmeans.centroid_update_triton import triton_centroid_update_sorted_euclid

    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    peak_ms = timed(lambda: a @ a)
    peak = 2 * 8192**3 / (peak_ms * 1e-3) / 1e12
    del a
    rows = [f"torch.matmul bf16 8192^3 (peak)              {peak_ms:.3f} ms  {peak:.0f} TFLOP/s"]
    scale = 4 if args.quick else 1
    for n, k, d in [(4 << 20, 1024, 1024), (1 << 20, 16384, 1024)]:
        n //= scale
        for dt, label in [(torch.bfloat16, "bf16"), (torch.float16, "f16")]:
            if k == 16384 and dt is torch.float16:
                continue
            torch.manual_seed(0)
            x = torch.randn(1, n, d, device=dev, dtype=dt)
            c = x[:, torch.randperm(n, device=dev)[:k]].contiguous()
            x_sq = (x.float() ** 2).sum(-1)
            ids = torch.empty(1, n, device=dev, dtype=torch.int32)
            t_assign = timed(lambda: euclid_assign_triton(x, c, x_sq, out=ids))

            def iteration():
                cid = euclid_assign_triton(x, c, x_sq)
                new = triton_centroid_update_sorted_euclid(x, cid, c)
                (new - c).norm(dim=-1).max()

            t_iter = timed(iteration)
            tf = 2 * n * k * d / (t_assign * 1e-3) / 1e12
            rows.append(f"flash-kmeans assign {label} N={n >> 20}M K={k >> 10}K D={d}   {t_assign:9.3f} ms  "
                        f"{tf:5.0f} TFLOP/s {100 * tf / peak:5.1f}% peak | iteration {t_iter:8.3f} ms = "
                        f"{t_iter / t_assign:.2f}x assign")
            del x, c, x_sq, ids
            torch.cuda.empty_cache()
    print(f"==== flash-kmeans summary ({name}) ====")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
