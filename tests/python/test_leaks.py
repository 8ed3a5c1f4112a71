"""No leaks across 1000 create/use/destroy cycles (resident memory stays flat)."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from conftest import generate
from mega_taxonomy import IndexFlatIP, IndexFlatL2, MegataxError, TaxonomyEngine

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def growth(cycle, n: int, warmup: int = 100) -> int:
    for i in range(warmup):
        cycle(i)
    gc.collect()
    before = rss_bytes()
    for i in range(n):
        cycle(i)
    gc.collect()
    return rss_bytes() - before


pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")

MB = 1 << 20


def test_index_cycles_do_not_leak(tmp_path):
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((500, 64), dtype=np.float32)  # 128 KB per index
    xq = rng.standard_normal((8, 64), dtype=np.float32)
    path = tmp_path / "i.mtx"

    def cycle(i):
        index = (IndexFlatL2 if i % 2 else IndexFlatIP)(64, dtype="f16" if i % 3 == 0 else "f32")
        index.add(xb)
        index.add(xb.astype(np.float64))  # the conversion copy, freed with the call
        D, I = index.search(xq, 10)
        assert I.shape == (8, 10)
        if i % 10 == 0:
            index.save(path)
            IndexFlatL2.load(path)
        try:
            index.search(xq[:, :10], 3)
        except MegataxError:
            pass
        del index, D, I

    # 1000 cycles allocate ~400 MB in all; a leak of one index per cycle would show as
    # >= 128 MB.
    assert growth(cycle, 1000) < 8 * MB


def test_engine_cycles_do_not_leak(tmp_path):
    shards = generate(tmp_path / "data", n=4000, dim=16, branching=4, shards=2)
    fitted = TaxonomyEngine(n_levels=2, branching_factor=4, storage_uri=str(tmp_path / "t"))
    fitted.fit(shards, str(tmp_path / "o"), progress=False)
    x = np.random.default_rng(0).standard_normal((2000, 16), dtype=np.float32)

    def cycle(i):
        engine = TaxonomyEngine.load(str(tmp_path / "t"))
        paths, dist = engine.predict(x, return_distances=True)
        assert paths.shape == (2000, 2)
        engine.info()
        engine.centroids(2)
        try:
            engine.predict(x[:, :3])
        except MegataxError:
            pass
        TaxonomyEngine(n_levels=3, branching_factor=[2, 3, 4], storage_uri="x")
        del engine, paths, dist

    assert growth(cycle, 1000) < 8 * MB
