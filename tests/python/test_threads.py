"""The GIL is released while the engine computes: other Python threads make progress."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from conftest import generate
from mega_taxonomy import IndexFlatL2, TaxonomyEngine


class Ticker:
    """A Python thread that counts as fast as it can and records its longest stall."""

    def __init__(self):
        self.count = 0
        self.max_gap = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        last = time.perf_counter()
        while not self._stop.is_set():
            self.count += 1
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - last)
            last = now

    def __enter__(self):
        self._thread.start()
        time.sleep(0.02)
        self.count, self.max_gap = 0, 0.0
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def check_progress(ticker: Ticker, seconds: float) -> None:
    # Holding the GIL for the whole call would stall the ticker for about `seconds`.
    assert seconds > 0.1, f"the call took only {seconds:.3f} s: too short to tell"
    assert ticker.count > 1000, ticker.count
    assert ticker.max_gap < seconds / 2, (ticker.max_gap, seconds)


def test_fit_releases_the_gil(tmp_path):
    shards = generate(tmp_path / "data", n=150000, dim=64, levels=2, branching=16, shards=2)
    engine = TaxonomyEngine(n_levels=2, branching_factor=16, storage_uri=str(tmp_path / "t"),
                            threads=1)
    with Ticker() as ticker:
        t0 = time.perf_counter()
        engine.fit(shards, str(tmp_path / "o"), progress=False)
        seconds = time.perf_counter() - t0
    check_progress(ticker, seconds)


def test_search_and_add_release_the_gil():
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((200000, 128), dtype=np.float32)
    xq = rng.standard_normal((256, 128), dtype=np.float32)
    index = IndexFlatL2(128)
    with Ticker() as ticker:
        t0 = time.perf_counter()
        index.add(xb)
        index.add(xb)
        index.search(xq, 10, threads=1)
        seconds = time.perf_counter() - t0
    check_progress(ticker, seconds)


def test_concurrent_searches_and_adds_are_safe():
    rng = np.random.default_rng(1)
    xb = rng.standard_normal((20000, 32), dtype=np.float32)
    xq = rng.standard_normal((16, 32), dtype=np.float32)
    index = IndexFlatL2(32)
    index.add(xb)
    expected = index.search(xq, 5)
    errors = []

    def searcher():
        try:
            for _ in range(30):
                D, I = index.search(xq, 5, threads=1)
                # Rows added concurrently are copies: the 5 nearest never change.
                np.testing.assert_array_equal(I, expected[1])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def adder():
        try:
            for _ in range(10):
                index.add(xb[:1000] + 100.0)
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(3)] + [threading.Thread(target=adder)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert index.ntotal == 30000
