#!/usr/bin/env python3
"""Converts 2-D float32 .npy files to Parquet with pyarrow (column 'embedding' list<float>,
ids in 'id', a text column that must never be decoded), ZSTD, small row groups.

Usage: npy_to_parquet.py ROW_GROUP_ROWS IN.npy OUT.parquet [IN.npy OUT.parquet ...]
"""
import sys

try:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as e:
    print(f"missing Python package (pip install -r requirements.txt): {e}")
    sys.exit(97)

rg = int(sys.argv[1])
args = sys.argv[2:]
for src, dst in zip(args[0::2], args[1::2]):
    x = np.load(src)
    n, d = x.shape
    emb = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * d),
                                   pa.array(x.ravel(), pa.float32()))
    t = pa.table({"id": pa.array(np.arange(n, dtype=np.int64)),
                  "caption": pa.array([f"sample {i}" for i in range(n)]),
                  "embedding": emb})
    pq.write_table(t, dst, row_group_size=rg, compression="zstd")
