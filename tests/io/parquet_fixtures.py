#!/usr/bin/env python3
"""Parquet fixtures for tests/io/parquet_test.cc, written at test time by independent writers:
pyarrow, DuckDB and Polars (no committed binaries).

Usage: parquet_fixtures.py OUT_DIR SEED

Writes the fixtures into OUT_DIR and a manifest, OUT_DIR/manifest.tsv, one fixture a line:

    name  file  column  id_column|-  skip_null(0|1)  binary_dtype(f32|f16|-)  expect  rest...

expect is "ok" (rest: vectors.npy  ids.npy|-  skipped_rows) -- the rows the reader must return,
exactly, as written by numpy -- or an error code name such as "data_loss" (rest: substrings
of the message, separated by '|').

Exit status 97 with a message when a writer library is missing (the test then fails and
says which one: these libraries are the independent references, see requirements.txt).
"""
import os
import sys

missing = []
try:
    import numpy as np
except ImportError as e:  # pragma: no cover
    missing.append(f"numpy ({e})")
try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as e:
    missing.append(f"pyarrow ({e})")
try:
    import duckdb
except ImportError as e:
    missing.append(f"duckdb ({e})")
try:
    import polars as pl
except ImportError as e:
    missing.append(f"polars ({e})")
if missing:
    print("missing Python packages (pip install -r requirements.txt): " + ", ".join(missing))
    sys.exit(97)

out = sys.argv[1]
seed = int(sys.argv[2])
rng = np.random.default_rng(seed)
manifest = []


def vectors(n, dim, dtype=np.float32):
    # Mixed magnitudes and signs, -0.0 and a subnormal: exact bit patterns must survive.
    x = (rng.standard_normal((n, dim)) * 10.0 ** rng.integers(-3, 4, (n, 1))).astype(dtype)
    if n > 2 and dim > 1:
        x[1, 0] = -0.0
        if dtype == np.float32:
            x[2, 1] = np.float32(1e-40)
    return x


def ok(name, path, vecs, ids=None, column="embedding", id_column=None, skip_null=False,
       binary="-", skipped=0):
    np.save(os.path.join(out, name + ".expected.npy"), np.ascontiguousarray(vecs))
    ids_file = "-"
    if ids is not None:
        ids_file = name + ".ids.npy"
        np.save(os.path.join(out, ids_file), np.asarray(ids, dtype=np.int64))
    manifest.append([name, os.path.basename(path), column, id_column or "-",
                     "1" if skip_null else "0", binary, "ok", name + ".expected.npy", ids_file,
                     str(skipped)])


def bad(name, path, code, parts, column="embedding", id_column=None, skip_null=False,
        binary="-"):
    manifest.append([name, os.path.basename(path), column, id_column or "-",
                     "1" if skip_null else "0", binary, code, "|".join(parts)])


def list_array(x, list_type):
    return pa.array(list(x), type=list_type)


def p(name):
    return os.path.join(out, name)


# ---- pyarrow: layouts, encodings, page versions, codecs, row groups ----------------------
n, d = 1000, 8
x = vectors(n, d)
ids = rng.integers(-2**62, 2**62, n)
texts = pa.array([f"row {i} " + "x" * (i % 50) for i in range(n)])

for name, kwargs in [
    ("pa_list_snappy_dict_v1", dict(compression="snappy", use_dictionary=True,
                                    data_page_version="1.0")),
    ("pa_list_zstd_nodict_v2", dict(compression="zstd", use_dictionary=False,
                                    data_page_version="2.0")),
    ("pa_list_gzip_dict_v2", dict(compression="gzip", use_dictionary=True,
                                  data_page_version="2.0")),
    ("pa_list_none_v1", dict(compression="none", use_dictionary=False,
                             data_page_version="1.0")),
]:
    t = pa.table({"text": texts, "id": pa.array(ids, pa.int64()),
                  "embedding": list_array(x, pa.list_(pa.float32()))})
    pq.write_table(t, p(name + ".parquet"), row_group_size=300, data_page_size=4096, **kwargs)
    ok(name, p(name + ".parquet"), x, ids, id_column="id")

t = pa.table({"embedding": list_array(x, pa.large_list(pa.float32())),
              "id": pa.array(ids, pa.int64())})
pq.write_table(t, p("pa_large_list.parquet"), row_group_size=128, compression="zstd")
ok("pa_large_list", p("pa_large_list.parquet"), x, ids, id_column="id")

xf = vectors(700, 16)
t = pa.table({"vec": pa.FixedSizeListArray.from_arrays(pa.array(xf.ravel(), pa.float32()), 16),
              "key": pa.array(np.arange(700), pa.int32())})
pq.write_table(t, p("pa_fixed_size_list_gzip.parquet"), row_group_size=100, compression="gzip")
ok("pa_fixed_size_list_gzip", p("pa_fixed_size_list_gzip.parquet"), xf, np.arange(700),
   column="vec", id_column="key")

xh = vectors(300, 12, np.float16)
t = pa.table({"embedding": pa.array(list(xh), type=pa.list_(pa.float16()))})
pq.write_table(t, p("pa_list_f16.parquet"), row_group_size=64, compression="snappy")
ok("pa_list_f16", p("pa_list_f16.parquet"), xh)

xh2 = vectors(100, 6, np.float16)
t = pa.table({"embedding": pa.FixedSizeListArray.from_arrays(pa.array(xh2.ravel(), pa.float16()), 6)})
pq.write_table(t, p("pa_fixed_f16.parquet"), compression="zstd")
ok("pa_fixed_f16", p("pa_fixed_f16.parquet"), xh2)

xb = vectors(400, 10)
t = pa.table({"emb": pa.array([r.tobytes() for r in xb], pa.binary()),
              "id": pa.array(np.arange(400) * 3, pa.int64())})
pq.write_table(t, p("pa_binary_f32.parquet"), row_group_size=150, compression="zstd")
ok("pa_binary_f32", p("pa_binary_f32.parquet"), xb, np.arange(400) * 3, column="emb",
   id_column="id", binary="f32")

t = pa.table({"emb": pa.array([r.tobytes() for r in xb], pa.binary(40))})
pq.write_table(t, p("pa_fixed_binary_f32.parquet"), row_group_size=150, compression="snappy")
ok("pa_fixed_binary_f32", p("pa_fixed_binary_f32.parquet"), xb, column="emb", binary="f32")

xbh = vectors(200, 10, np.float16)
t = pa.table({"emb": pa.array([r.tobytes() for r in xbh], pa.large_binary())})
pq.write_table(t, p("pa_large_binary_f16.parquet"), row_group_size=64)
ok("pa_large_binary_f16", p("pa_large_binary_f16.parquet"), xbh, column="emb", binary="f16")

# Nullable rows: skipped with skip_null (with and without statistics; list and binary).
xn = vectors(500, 8)
null_rows = np.zeros(500, bool)
null_rows[rng.choice(500, 37, replace=False)] = True
null_rows[0] = True  # dim must come from the first non-null row
null_rows[300:330] = True  # a whole stretch
ids_n = np.arange(500) + 10**12
emb_n = pa.array([None if null_rows[i] else list(xn[i]) for i in range(500)],
                 type=pa.list_(pa.float32()))
for name, stats in [("pa_nullable_stats", True), ("pa_nullable_nostats", False)]:
    t = pa.table({"id": pa.array(ids_n, pa.int64()), "embedding": emb_n})
    pq.write_table(t, p(name + ".parquet"), row_group_size=100, write_statistics=stats,
                   compression="zstd")
    ok(name, p(name + ".parquet"), xn[~null_rows], ids_n[~null_rows], id_column="id",
       skip_null=True, skipped=int(null_rows.sum()))
    bad(name + "_noskip", p(name + ".parquet"), "data_loss",
        ["row 0 is null", "column 'embedding'", name + ".parquet", "skip-null"])
t = pa.table({"emb": pa.array([None if null_rows[i] else xn[i].tobytes() for i in range(500)],
                              pa.binary())})
pq.write_table(t, p("pa_nullable_binary.parquet"), row_group_size=100)
ok("pa_nullable_binary", p("pa_nullable_binary.parquet"), xn[~null_rows], column="emb",
   skip_null=True, binary="f32", skipped=int(null_rows.sum()))
# A whole row group of nulls, and a file whose only group is all null but one row.
t = pa.table({"embedding": pa.array([None] * 100 + [list(r) for r in xn[:50]],
                                    type=pa.list_(pa.float32()))})
pq.write_table(t, p("pa_null_group.parquet"), row_group_size=100)
ok("pa_null_group", p("pa_null_group.parquet"), xn[:50], skip_null=True, skipped=100)
# Nullable column type without nulls: no pass needed, nothing skipped.
t = pa.table({"embedding": list_array(xn, pa.list_(pa.float32()))})
pq.write_table(t, p("pa_nullable_type_no_nulls.parquet"), row_group_size=100)
ok("pa_nullable_type_no_nulls", p("pa_nullable_type_no_nulls.parquet"), xn, skip_null=True)

# ---- DuckDB (its own Parquet writer) ---------------------------------------------------
xd = vectors(5000, 8)
src = pa.table({"id": pa.array(np.arange(5000) + 7, pa.int64()),
                "embedding": list_array(xd, pa.list_(pa.float32()))})
con = duckdb.connect()
con.register("src", src)
con.execute(f"COPY (SELECT id, embedding, 'note ' || id AS note FROM src ORDER BY id) TO "
            f"'{p('duckdb_list_zstd.parquet')}' (FORMAT parquet, COMPRESSION zstd, "
            f"ROW_GROUP_SIZE 2048)")
ok("duckdb_list_zstd", p("duckdb_list_zstd.parquet"), xd, np.arange(5000) + 7, id_column="id")
con.execute(f"COPY (SELECT id, embedding::FLOAT[8] AS embedding FROM src ORDER BY id) TO "
            f"'{p('duckdb_array_snappy.parquet')}' (FORMAT parquet, COMPRESSION snappy, "
            f"ROW_GROUP_SIZE 2048)")
ok("duckdb_array_snappy", p("duckdb_array_snappy.parquet"), xd, np.arange(5000) + 7,
   id_column="id")
con.close()

# ---- Polars (its own writer; lists become large_list) ------------------------------------
xp = vectors(800, 8)
df = pl.DataFrame({"id": np.arange(800, dtype=np.int64) * 2,
                   "embedding": pl.Series("embedding", [r.tolist() for r in xp], dtype=pl.List(pl.Float32))})
df.write_parquet(p("polars_list_zstd.parquet"), compression="zstd", row_group_size=250,
                 statistics=True)
ok("polars_list_zstd", p("polars_list_zstd.parquet"), xp, np.arange(800) * 2, id_column="id")
dfa = pl.DataFrame({"embedding": pl.Series("embedding", xp, dtype=pl.Array(pl.Float32, 8))})
dfa.write_parquet(p("polars_array_lz4.parquet"), compression="lz4", row_group_size=300)
ok("polars_array_lz4", p("polars_array_lz4.parquet"), xp)

# ---- Bad inputs: each must give a clear error naming file and column ---------------------
good = p("pa_list_zstd_nodict_v2.parquet")
blob = open(good, "rb").read()
open(p("bad_truncated_footer.parquet"), "wb").write(blob[:-7])
bad("bad_truncated_footer", p("bad_truncated_footer.parquet"), "data_loss",
    ["bad_truncated_footer.parquet", "column 'embedding'", "not a readable Parquet file"])
open(p("bad_magic.parquet"), "wb").write(blob[:-4] + b"XXXX")
bad("bad_magic", p("bad_magic.parquet"), "data_loss",
    ["bad_magic.parquet", "column 'embedding'", "magic"])
open(p("bad_tiny.parquet"), "wb").write(b"PAR")
bad("bad_tiny", p("bad_tiny.parquet"), "data_loss", ["bad_tiny.parquet", "column 'embedding'"])
open(p("bad_empty.parquet"), "wb").write(b"")
bad("bad_empty", p("bad_empty.parquet"), "data_loss", ["bad_empty.parquet", "column 'embedding'"])
# Garbage in the middle of the (ZSTD) data pages.
mid = bytearray(blob)
for i in range(len(mid) // 4, len(mid) // 2):
    mid[i] = (mid[i] * 7 + 13) & 0xFF
open(p("bad_pages.parquet"), "wb").write(bytes(mid))
bad("bad_pages", p("bad_pages.parquet"), "data_loss", ["bad_pages.parquet", "column 'embedding'"])

t = pa.table({"embedding": list_array(vectors(10, 4).astype(np.float64), pa.list_(pa.float64()))})
pq.write_table(t, p("bad_type_double.parquet"))
bad("bad_type_double", p("bad_type_double.parquet"), "invalid_argument",
    ["bad_type_double.parquet", "column 'embedding'", "double", "expected list<float>"])
t = pa.table({"embedding": pa.array(["a", "b"])})
pq.write_table(t, p("bad_type_string.parquet"))
bad("bad_type_string", p("bad_type_string.parquet"), "invalid_argument",
    ["bad_type_string.parquet", "column 'embedding'", "has type string"])
bad("bad_missing_column", good, "invalid_argument",
    ["pa_list_zstd_nodict_v2.parquet", "column 'vectors'", "no such column", "text, id, embedding"],
    column="vectors")
bad("bad_missing_id_column", good, "invalid_argument",
    ["pa_list_zstd_nodict_v2.parquet", "id column 'row_id'", "no such column"], id_column="row_id")
bad("bad_id_type", good, "invalid_argument",
    ["pa_list_zstd_nodict_v2.parquet", "id column 'text'", "expected an integer"], id_column="text")
rows = [list(r) for r in vectors(600, 8)]
rows[450] = rows[450][:7]
t = pa.table({"embedding": pa.array(rows, type=pa.list_(pa.float32()))})
pq.write_table(t, p("bad_dim_mismatch.parquet"), row_group_size=200)
bad("bad_dim_mismatch", p("bad_dim_mismatch.parquet"), "data_loss",
    ["bad_dim_mismatch.parquet", "column 'embedding'", "row 450 has dim 7, expected 8 (from row 0)"])
rows = [list(r) for r in vectors(20, 4)]
rows[3][2] = None
t = pa.table({"embedding": pa.array(rows, type=pa.list_(pa.float32()))})
pq.write_table(t, p("bad_null_element.parquet"))
bad("bad_null_element", p("bad_null_element.parquet"), "data_loss",
    ["bad_null_element.parquet", "column 'embedding'", "row 3 element 2 is null"])
rows = [list(r) for r in vectors(20, 4)]
rows[0] = []
t = pa.table({"embedding": pa.array(rows, type=pa.list_(pa.float32()))})
pq.write_table(t, p("bad_empty_row.parquet"))
bad("bad_empty_row", p("bad_empty_row.parquet"), "data_loss",
    ["bad_empty_row.parquet", "column 'embedding'", "row 0 is an empty vector"])
t = pa.table({"emb": pa.array([b"\0" * 40] * 5 + [b"\0" * 38], pa.binary())})
pq.write_table(t, p("bad_binary_length.parquet"))
bad("bad_binary_length", p("bad_binary_length.parquet"), "data_loss",
    ["bad_binary_length.parquet", "column 'emb'", "row 5 has 38 bytes"], column="emb", binary="f32")
t = pa.table({"id": pa.array([1, None, 3], pa.int64()),
              "embedding": list_array(vectors(3, 4), pa.list_(pa.float32()))})
pq.write_table(t, p("bad_null_id.parquet"))
bad("bad_null_id", p("bad_null_id.parquet"), "data_loss",
    ["bad_null_id.parquet", "id column 'id'", "row 1 is null"], id_column="id")

with open(os.path.join(out, "manifest.tsv"), "w") as f:
    for row in manifest:
        f.write("\t".join(row) + "\n")
print(f"wrote {len(manifest)} fixtures to {out}")
