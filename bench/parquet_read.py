#!/usr/bin/env python3
"""Helpers of bench/parquet_read.sh.

  parquet_read.py make DIR GB DIM    random float32 vectors (~GB gigabytes) as DIR/emb.npy and
                                     DIR/emb.parquet (list<float> 'embedding', int64 'id',
                                     ZSTD, row groups of 65536 rows)
  parquet_read.py pyarrow FILE       pyarrow's read of the embedding column into one float32
                                     numpy buffer per batch (iter_batches, as a streaming
                                     reader does) and pq.read_table (all threads); prints JSON
"""
import json
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

cmd = sys.argv[1]
if cmd == "make":
    out, gb, dim = sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    rows = int(gb * 1e9 / (dim * 4))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    np.save(os.path.join(out, "emb.npy"), x)
    chunk = 65536
    schema = pa.schema([("id", pa.int64()), ("embedding", pa.list_(pa.float32()))])
    with pq.ParquetWriter(os.path.join(out, "emb.parquet"), schema, compression="zstd") as w:
        for b in range(0, rows, chunk):
            part = x[b:b + chunk]
            n = part.shape[0]
            emb = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * dim),
                                           pa.array(part.ravel()))
            w.write_table(pa.table({"id": pa.array(np.arange(b, b + n, dtype=np.int64)),
                                    "embedding": emb}), row_group_size=chunk)
    # The same vectors as 16 shards (what a dataset looks like; also what a local moto
    # server can serve: its ranged GET copies the whole object, so it is slow on 1 GB ones).
    shards = os.path.join(out, "shards")
    os.makedirs(shards)
    per = -(-rows // 16)
    for i, b in enumerate(range(0, rows, per)):
        part = x[b:b + per]
        n = part.shape[0]
        np.save(os.path.join(shards, f"part-{i:02d}.npy"), part)
        emb = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * dim),
                                       pa.array(part.ravel()))
        pq.write_table(pa.table({"id": pa.array(np.arange(b, b + n, dtype=np.int64)),
                                 "embedding": emb}),
                       os.path.join(shards, f"part-{i:02d}.parquet"), compression="zstd",
                       row_group_size=chunk)
    print(json.dumps({"rows": rows, "dim": dim,
                      "npy_bytes": os.path.getsize(os.path.join(out, "emb.npy")),
                      "parquet_bytes": os.path.getsize(os.path.join(out, "emb.parquet"))}))
elif cmd == "pyarrow":
    path = sys.argv[2]
    res = {}
    for name in ["iter_batches", "read_table"]:
        best = 1e300
        for _ in range(2):
            t0 = time.perf_counter()
            total = 0
            if name == "iter_batches":
                f = pq.ParquetFile(path)
                for batch in f.iter_batches(batch_size=65536, columns=["embedding"],
                                            use_threads=False):
                    v = batch.column(0).values.to_numpy()  # zero-copy float32
                    total += v.size
            else:
                t = pq.read_table(path, columns=["embedding"])
                for chunk in t.column(0).chunks:
                    total += chunk.values.to_numpy().size
            best = min(best, time.perf_counter() - t0)
        res[name] = {"seconds": round(best, 3), "gb_per_s": round(total * 4 / 1e9 / best, 3)}
    print(json.dumps(res))
