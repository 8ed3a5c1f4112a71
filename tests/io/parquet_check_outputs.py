#!/usr/bin/env python3
"""Reads a Parquet output written by write_paths_parquet with pyarrow and DuckDB and checks it
against the same arrays saved as .npy (tests/io/parquet_test.cc).

Usage: parquet_check_outputs.py FILE.parquet IDS.npy PATHS.npy DIST.npy ROW_GROUP_ROWS
Exit 0 when both readers agree exactly; 97 when a package is missing; 1 on a mismatch.
"""
import sys

try:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import duckdb
except ImportError as e:
    print(f"missing Python package (pip install -r requirements.txt): {e}")
    sys.exit(97)

path, ids_npy, paths_npy, dist_npy, rg_rows = sys.argv[1:6]
ids = np.load(ids_npy)
paths = np.load(paths_npy)
dist = np.load(dist_npy)
n, levels = paths.shape
problems = []

# pyarrow: schema, compression, row groups, values.
f = pq.ParquetFile(path)
want = pa.schema([pa.field("id", pa.int64(), nullable=False),
                  pa.field("path", pa.list_(pa.field("element", pa.int32(), nullable=False)),
                           nullable=False),
                  pa.field("dist", pa.float32(), nullable=False)])
if not f.schema_arrow.equals(want):
    problems.append(f"schema {f.schema_arrow} != {want}")
md = f.metadata
expected_groups = -(-n // int(rg_rows)) if n else md.num_row_groups
if md.num_row_groups != expected_groups:
    problems.append(f"{md.num_row_groups} row groups, expected {expected_groups}")
for g in range(md.num_row_groups):
    for c in range(md.num_columns):
        comp = md.row_group(g).column(c).compression
        if comp != "ZSTD":
            problems.append(f"row group {g} column {c}: compression {comp}")
t = f.read()
if t.num_rows != n:
    problems.append(f"pyarrow: {t.num_rows} rows, expected {n}")
else:
    if not np.array_equal(t.column("id").to_numpy(), ids):
        problems.append("pyarrow: ids differ")
    got_paths = np.array(t.column("path").to_pylist(), dtype=np.int32).reshape(n, levels)
    if not np.array_equal(got_paths, paths):
        problems.append("pyarrow: paths differ")
    if t.column("dist").to_numpy().tobytes() != dist.tobytes():
        problems.append("pyarrow: distances differ (bitwise)")

# DuckDB: its own reader, aggregated per level, plus a full comparison.
con = duckdb.connect()
cnt = con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()[0]
if cnt != n:
    problems.append(f"duckdb: {cnt} rows, expected {n}")
if n:
    rows = con.execute(f"SELECT id, path, dist FROM read_parquet('{path}')").fetchall()
    d_ids = np.array([r[0] for r in rows], dtype=np.int64)
    d_paths = np.array([r[1] for r in rows], dtype=np.int32).reshape(n, levels)
    d_dist = np.array([r[2] for r in rows], dtype=np.float32)
    if not np.array_equal(d_ids, ids):
        problems.append("duckdb: ids differ")
    if not np.array_equal(d_paths, paths):
        problems.append("duckdb: paths differ")
    if d_dist.tobytes() != dist.tobytes():
        problems.append("duckdb: distances differ (bitwise)")
    first = con.execute(f"SELECT path[1], count(*) FROM read_parquet('{path}') GROUP BY 1 ORDER BY 1").fetchall()
    want_first = sorted(zip(*np.unique(paths[:, 0], return_counts=True)))
    if [(int(a), int(b)) for a, b in first] != [(int(a), int(b)) for a, b in want_first]:
        problems.append(f"duckdb: level-1 counts {first} != {want_first}")

if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"ok: {n} rows x {levels} levels read back by pyarrow and duckdb")
