"""IndexFlatL2 / IndexFlatIP against a numpy float64 brute force, arrays, save/load."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import mega_taxonomy as mt
from mega_taxonomy import IndexFlat, IndexFlatIP, IndexFlatL2, MegataxError, MegataxValueError


def brute_force(xb: np.ndarray, xq: np.ndarray, k: int, metric: str):
    """Exact k-NN in float64: (distances, ids), nearest first, ties to the smaller id."""
    b = xb.astype(np.float64)
    q = xq.astype(np.float64)
    if metric == "l2":
        dist = ((q[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        order = np.lexsort((np.broadcast_to(np.arange(len(b)), dist.shape), dist), axis=1)
    else:
        dist = q @ b.T
        order = np.lexsort((np.broadcast_to(np.arange(len(b)), dist.shape), -dist), axis=1)
    ids = order[:, :k]
    return np.take_along_axis(dist, ids, 1), ids


def check_against_brute_force(index, xb, xq, k, metric, rtol):
    D, I = index.search(xq, k)
    assert D.dtype == np.float32 and I.dtype == np.int64
    assert D.shape == (len(xq), k) and I.shape == (len(xq), k)
    D_ref, I_ref = brute_force(xb, xq, k, metric)
    scale = np.abs(D_ref).max() + 1.0
    np.testing.assert_allclose(D, D_ref, rtol=0, atol=rtol * scale)
    # Ids may differ only between (near-)ties: the distances to the ids we return must be
    # as good as the reference's.
    b = xb.astype(np.float64)
    for qi in range(len(xq)):
        if metric == "l2":
            ours = ((b[I[qi]] - xq[qi].astype(np.float64)) ** 2).sum(-1)
        else:
            ours = b[I[qi]] @ xq[qi].astype(np.float64)
        np.testing.assert_allclose(ours, D_ref[qi], rtol=0, atol=rtol * scale)
    agree = (I == I_ref).mean()
    assert agree > 0.95, f"only {agree:.3f} of ids equal the reference"


SHAPES = [  # (n, d, nq, k): odd sizes, one row, k > ntotal below
    (1000, 128, 50, 10),
    (777, 37, 13, 7),
    (1, 5, 3, 1),
    (300, 1, 4, 3),
    (2049, 96, 1, 100),
]


@pytest.mark.parametrize("n,d,nq,k", SHAPES)
@pytest.mark.parametrize("cls,metric", [(IndexFlatL2, "l2"), (IndexFlatIP, "ip")])
def test_matches_numpy_brute_force(n, d, nq, k, cls, metric):
    rng = np.random.default_rng(n * 1000 + d)
    xb = rng.standard_normal((n, d), dtype=np.float32)
    xq = rng.standard_normal((nq, d), dtype=np.float32)
    index = cls(d)
    index.add(xb)
    assert index.ntotal == n and len(index) == n and index.d == d and index.metric == metric
    check_against_brute_force(index, xb, xq, k, metric, rtol=1e-5)


@pytest.mark.parametrize("cls,metric", [(IndexFlatL2, "l2"), (IndexFlatIP, "ip")])
def test_f16_storage_matches_brute_force_of_rounded_data(cls, metric):
    rng = np.random.default_rng(3)
    xb = rng.standard_normal((500, 64)).astype(np.float16)
    xq = rng.standard_normal((20, 64)).astype(np.float16)
    index = cls(64, dtype="f16")
    index.add(xb)  # float16 in, read in place
    assert index.dtype == "f16"
    check_against_brute_force(index, xb.astype(np.float32), xq, 5, metric, rtol=1e-3)


def test_base_class_and_faiss_style_usage():
    rng = np.random.default_rng(0)
    xb = rng.random((1000, 128), dtype=np.float32)
    xq = rng.random((5, 128), dtype=np.float32)
    index = IndexFlatL2(128)
    index.add(xb)
    D, I = index.search(xq, k=10)
    assert I.shape == (5, 10)
    generic = IndexFlat(128, metric="ip")
    assert generic.metric == "ip"
    assert isinstance(IndexFlatL2(4), IndexFlat)


def test_k_larger_than_ntotal_and_empty_index():
    index = IndexFlatL2(4)
    D, I = index.search(np.zeros((2, 4), np.float32), 3)
    assert (I == -1).all() and np.isinf(D).all() and (D > 0).all()
    index.add(np.eye(4, dtype=np.float32))
    D, I = index.search(np.eye(4, dtype=np.float32)[:1], 6)
    assert list(I[0, :4]) == [0, 1, 2, 3] and list(I[0, 4:]) == [-1, -1]
    assert D[0, 0] == 0 and np.isinf(D[0, 4:]).all()
    ip = IndexFlatIP(4)
    ip.add(np.eye(4, dtype=np.float32))
    D, I = ip.search(np.ones((1, 4), np.float32), 5)
    assert I[0, 4] == -1 and D[0, 4] == -np.inf


def test_reset_reconstruct_save_load(tmp_path):
    rng = np.random.default_rng(1)
    xb = rng.standard_normal((200, 16), dtype=np.float32)
    index = IndexFlatIP(16)
    index.add(xb)
    np.testing.assert_array_equal(index.reconstruct(17), xb[17])
    path = tmp_path / "index.mtx"
    index.save(path)  # os.PathLike accepted
    loaded = IndexFlat.load(str(path))
    assert type(loaded) is IndexFlatIP and loaded.ntotal == 200 and loaded.d == 16
    q = xb[:7]
    for a, b in zip(index.search(q, 4), loaded.search(q, 4)):
        np.testing.assert_array_equal(a, b)
    l2 = IndexFlatL2(16)
    l2.add(xb)
    l2.save(path)
    assert type(IndexFlatIP.load(path)) is IndexFlatL2  # the file's metric decides
    index.reset()
    assert index.ntotal == 0
    assert "ntotal=0" in repr(index)


def test_threads_argument_gives_same_results():
    rng = np.random.default_rng(5)
    xb = rng.standard_normal((3000, 32), dtype=np.float32)
    xq = rng.standard_normal((64, 32), dtype=np.float32)
    index = IndexFlatL2(32)
    index.add(xb)
    D1, I1 = index.search(xq, 8, threads=1)
    D2, I2 = index.search(xq, 8, threads=2)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)


# ---- arrays: zero copy, the one conversion, errors ---------------------------------------


def info(x):
    return mt._core._matrix_arg_info(x)


def test_float32_and_float16_are_read_in_place():
    x = np.zeros((10, 8), np.float32)
    i = info(x)
    assert not i["copied"] and i["data"] == x.ctypes.data and i["stride"] == 8
    i = info(x[::2])  # row step: a stride, still no copy
    assert not i["copied"] and i["stride"] == 16 and i["rows"] == 5
    i = info(x[:, :5])  # column slice: rows longer than dim
    assert not i["copied"] and i["stride"] == 8 and i["dim"] == 5
    h = np.zeros((3, 4), np.float16)
    i = info(h)
    assert not i["copied"] and i["dtype"] == "f16" and i["data"] == h.ctypes.data


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.zeros((6, 4), np.float64),
        lambda: np.zeros((6, 4), np.int32),
        lambda: np.zeros((6, 4), np.uint8),
        lambda: np.asfortranarray(np.zeros((6, 4), np.float32)),
        lambda: np.zeros((6, 8), np.float32)[:, ::2],
        lambda: np.zeros((6, 4), np.float32)[::-1],
        lambda: np.zeros((6, 4), ">f4"),
        lambda: [[0.0] * 4] * 6,
    ],
    ids=["float64", "int32", "uint8", "fortran", "column-step", "negative-rows", "big-endian", "list"],
)
def test_other_inputs_are_copied_once_to_float32(make):
    x = make()
    i = info(x)
    assert i["copied"] and i["dtype"] == "f32" and i["stride"] == 4 and i["rows"] == 6


def test_converted_inputs_give_the_same_results():
    rng = np.random.default_rng(9)
    xb = rng.standard_normal((400, 24), dtype=np.float32)
    index = IndexFlatL2(24)
    index.add(xb.astype(np.float64))
    ref = IndexFlatL2(24)
    ref.add(xb)
    q = xb[:10]
    for a, b in zip(index.search(np.asfortranarray(q.astype(np.float64)), 3), ref.search(q, 3)):
        np.testing.assert_array_equal(a, b)


def test_add_float32_makes_no_numpy_copy_and_float64_makes_one():
    x32 = np.random.default_rng(2).standard_normal((4096, 256), dtype=np.float32)
    x64 = x32.astype(np.float64)
    for x, copied in ((x32, False), (x64, True)):
        index = IndexFlatL2(256)
        tracemalloc.start()
        index.add(x)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        if copied:
            assert peak >= x32.nbytes, peak
        else:
            assert peak < x32.nbytes // 16, peak


@pytest.mark.parametrize(
    "bad,exc,words",
    [
        (np.zeros(8, np.float32), MegataxValueError, "2-D array"),
        (np.zeros((2, 2, 8), np.float32), MegataxValueError, "shape (2, 2, 8)"),
        (np.zeros((3, 8), np.complex64), TypeError, "complex64"),
        (np.array([["a"] * 8]), TypeError, "not supported"),
        (np.zeros((3, 8), object), TypeError, "object"),
        (np.zeros((3, 7), np.float32), MegataxValueError, "dim 7, index has dim 8"),
    ],
)
def test_bad_arrays_raise_clear_errors(bad, exc, words):
    index = IndexFlatL2(8)
    for call in (index.add, lambda x: index.search(x, 1)):
        with pytest.raises(exc) as e:
            call(bad)
        assert words in str(e.value)


def test_engine_errors_carry_message_and_code(tmp_path):
    index = IndexFlatL2(8)
    with pytest.raises(MegataxValueError) as e:
        index.search(np.zeros((1, 8), np.float32), 0)
    assert e.value.code == "invalid_argument" and "k must be >= 1, got 0" in str(e.value)
    assert isinstance(e.value, ValueError) and isinstance(e.value, RuntimeError)
    bad = np.zeros((3, 8), np.float32)
    bad[2, 5] = np.nan
    with pytest.raises(MegataxValueError, match="row 2"):
        index.add(bad)
    assert index.ntotal == 0  # nothing of a refused add is kept
    with pytest.raises(MegataxValueError, match="dim"):
        IndexFlatL2(0)
    with pytest.raises(MegataxValueError, match="dtype"):
        IndexFlatL2(4, dtype="int8")
    with pytest.raises(FileNotFoundError) as e:
        IndexFlat.load(tmp_path / "missing.mtx")
    assert isinstance(e.value, MegataxError) and e.value.code == "not_found"
    assert "missing.mtx" in str(e.value)
    junk = tmp_path / "junk.mtx"
    junk.write_bytes(b"not an index at all, just some bytes ...")
    with pytest.raises(MegataxError) as e:
        IndexFlat.load(junk)
    assert e.value.code == "data_loss" and "junk.mtx" in str(e.value)
    with pytest.raises(MegataxError) as e:
        index.save(tmp_path / "no" / "such" / "dir" / "x.mtx")
    assert e.value.code in ("io_error", "not_found")
    with pytest.raises(TypeError):
        index.search(np.zeros((1, 8), np.float32), "ten")


def test_search_backend_and_devices():
    rng = np.random.default_rng()
    xb = rng.standard_normal((300, 24), dtype=np.float32)
    xq = rng.standard_normal((4, 24), dtype=np.float32)
    index = IndexFlatL2(24)
    index.add(xb)
    D, I = index.search(xq, 5)
    want_D, want_I = brute_force(xb, xq, 5, "l2")
    assert (I == want_I).all()
    # devices only matter to the cuda backend; the cpu results are the same.
    D2, I2 = index.search(xq, 5, backend="cpu", devices=[0, 1])
    assert (I2 == I).all() and (D2 == D).all()
    with pytest.raises(MegataxValueError, match="backend"):
        index.search(xq, 5, backend="gpu")
    # cuda: results close to the reference on a machine with a GPU and a CUDA build;
    # elsewhere an error that says why.
    try:
        Dc, Ic = index.search(xq, 5, backend="cuda", devices=[0])
    except MegataxError as e:
        assert "cuda" in str(e).lower() or "CUDA" in str(e)
    else:
        assert (Ic == want_I).mean() >= 0.95
