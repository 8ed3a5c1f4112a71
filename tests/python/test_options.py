"""TaxonomyEngine's balancing, HNSW, Parquet-output and device options, and beam predict:
the same bytes as the megatax command with the same flags; beam search never farther than
greedy; device="cuda" in a CPU-only wheel is a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import generate, run_megatax
from mega_taxonomy import MegataxError, TaxonomyEngine


@pytest.fixture(scope="module")
def skewed(tmp_path_factory) -> str:
    """30,000 x 16 vectors whose leaves have Zipf-distributed sizes (exponent 1.1)."""
    folder = tmp_path_factory.mktemp("skewed")
    run_megatax("gen", "--out", str(folder), "--n", "30000", "--dim", "16", "--levels", "2",
                "--branching", "6", "--shards", "3", "--seed", "5", "--zipf", "1.1")
    return str(folder / "part-*.npy")


def test_balance_and_hnsw_options_equal_the_cli(tmp_path, skewed):
    flags = ["--levels", "2", "--branching", "6", "--balance", "--max-leaf-size", "700",
             "--hnsw-threshold", "4", "--hnsw-m", "8", "--hnsw-ef", "20", "--quiet"]
    run_megatax("fit", "--input", skewed, "--storage", str(tmp_path / "cli"),
                "--output", str(tmp_path / "out_cli"), *flags)
    engine = TaxonomyEngine(n_levels=2, branching_factor=6, balance=True, max_leaf_size=700,
                            hnsw_threshold=4, hnsw_m=8, hnsw_ef=20,
                            storage_uri=str(tmp_path / "py"))
    engine.fit(skewed, str(tmp_path / "out_py"), progress=False)
    cfg = engine.config
    assert (cfg.balance, cfg.max_leaf_size, cfg.hnsw_threshold, cfg.hnsw_m, cfg.hnsw_ef) == \
        (True, 700, 4, 8, 20)
    names = sorted(p.name for p in (tmp_path / "out_cli").glob("*.npy"))
    assert names
    for name in names:
        assert (tmp_path / "out_cli" / name).read_bytes() == (tmp_path / "out_py" / name).read_bytes()
    for level in (1, 2):
        for f in sorted((tmp_path / "cli" / f"level-{level}").iterdir()):
            assert f.read_bytes() == (tmp_path / "py" / f"level-{level}" / f.name).read_bytes(), f
    # Balancing did something: per-node branching differs from the uniform 6.
    assert engine.nodes_per_level()[1] != 36


def test_parquet_output_format(tmp_path, small_dataset):
    """output_format reaches the engine: Parquet files where the wheel has Arrow, else the
    engine's clear "no Arrow" error and no outputs (the PyPI wheel is built without Arrow)."""
    engine = TaxonomyEngine(n_levels=2, branching_factor=4, output_format="parquet",
                            storage_uri=str(tmp_path / "tax"))
    assert engine.config.output_format == "parquet"
    try:
        engine.fit(small_dataset, str(tmp_path / "out"), progress=False)
    except MegataxError as e:
        assert e.code == "unimplemented" and "parquet" in str(e).lower(), (e.code, str(e))
        assert not list(tmp_path.glob("out/*.parquet"))
        return
    pa = pytest.importorskip("pyarrow.parquet")
    tables = [pa.read_table(p) for p in sorted((tmp_path / "out").glob("*.parquet"))]
    assert sum(t.num_rows for t in tables) == 20000
    assert tables[0].column_names[:2] == ["id", "path"]


def test_beam_predict_never_farther_than_greedy(tmp_path, small_dataset):
    engine = TaxonomyEngine(n_levels=2, branching_factor=8, storage_uri=str(tmp_path / "tax"))
    engine.fit(small_dataset, str(tmp_path / "out"), progress=False)
    rng = np.random.default_rng()
    x = rng.standard_normal((500, 32)).astype(np.float32) * 2.0  # off-cluster points
    greedy, d_greedy = engine.predict(x, return_distances=True)
    one, d_one = engine.predict(x, return_distances=True, beam=1)
    np.testing.assert_array_equal(greedy, one)
    np.testing.assert_array_equal(d_greedy, d_one)
    wide, d_wide = engine.predict(x, return_distances=True, beam=4)
    assert np.all(d_wide <= d_greedy + 1e-6 * np.maximum(1.0, d_greedy))
    assert (d_wide < d_greedy).any()  # the beam found a nearer leaf somewhere
    # Through a URI the beam width reaches the files too: same paths as the CLI's --beam.
    paths_uri = engine.predict(small_dataset, beam=4)
    run_megatax("predict", "--storage", str(tmp_path / "tax"), "--input", small_dataset,
                "--output", str(tmp_path / "beam_cli"), "--beam", "4", "--quiet")
    cli = np.concatenate([np.load(p) for p in sorted((tmp_path / "beam_cli").glob("*.paths.npy"))])
    np.testing.assert_array_equal(paths_uri, cli)


def test_cuda_device_is_a_clear_error_without_a_gpu_build(tmp_path, small_dataset):
    engine = TaxonomyEngine(n_levels=1, branching_factor=4, device="cuda",
                            storage_uri=str(tmp_path / "tax"))
    with pytest.raises(MegataxError) as err:
        engine.fit(small_dataset, str(tmp_path / "out"), progress=False)
    assert "cuda" in str(err.value).lower()
    assert not (tmp_path / "tax" / "taxonomy.json").exists()
    with pytest.raises(MegataxError) as bad:
        TaxonomyEngine(device="tpu", storage_uri=str(tmp_path / "t2")).fit(
            small_dataset, str(tmp_path / "o2"), progress=False)
    assert "device" in str(bad.value)


def test_predict_on_cuda_is_a_clear_error_without_a_gpu_build(tmp_path, small_dataset):
    engine = TaxonomyEngine(n_levels=2, branching_factor=4, storage_uri=str(tmp_path / "tax"))
    engine.fit(small_dataset, str(tmp_path / "out"), progress=False)
    with pytest.raises(MegataxError) as err:
        engine.predict(small_dataset, str(tmp_path / "pred"), progress=False, device="cuda")
    assert "cuda" in str(err.value).lower()
    assert not (tmp_path / "pred").exists()
    with pytest.raises(MegataxError) as bad:
        engine.predict(small_dataset, str(tmp_path / "pred"), progress=False, device="tpu")
    assert "device must be cpu or cuda" in str(bad.value)
    # Arrays: the same errors (a CPU-only build has no GPU to put them on).
    rows = np.random.default_rng().standard_normal((50, engine.dim)).astype(np.float32)
    with pytest.raises(MegataxError) as err:
        engine.predict(rows, device="cuda")
    assert "cuda" in str(err.value).lower()
    with pytest.raises(MegataxError, match="device must be cpu or cuda"):
        engine.predict(rows, device="tpu")
    with pytest.raises(MegataxError, match=r"beam search \(beam 2\) runs on the cpu"):
        engine.predict(rows, device="cuda", beam=2)
    engine.release_gpu()  # nothing kept: a no-op
    # The default device is the CPU's greedy predict: the fit's own paths.
    paths = engine.predict(small_dataset, device="cpu")
    fit_paths = np.concatenate([np.load(p) for p in sorted((tmp_path / "out").glob("*.paths.npy"))])
    np.testing.assert_array_equal(paths, fit_paths)
