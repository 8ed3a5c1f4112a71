"""TaxonomyEngine: same bytes as the megatax command, predict, load, info, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import generate, run_megatax
from mega_taxonomy import (
    MegataxError,
    MegataxNotFoundError,
    MegataxValueError,
    TaxonomyConfig,
    TaxonomyEngine,
)

CONFIGS = [
    dict(n_levels=2, branching_factor=8),
    dict(n_levels=3, branching_factor=[4, 3, 2], metric="cosine", seed=11, max_iter=5),
    dict(n_levels=2, branching_factor=6, metric="ip", lloyd_passes=1, batch_rows=1000),
]


def cli_args(cfg: dict) -> list:
    b = cfg["branching_factor"]
    args = ["--levels", str(cfg["n_levels"]),
            "--branching", ",".join(map(str, b)) if isinstance(b, list) else str(b)]
    for key in ("metric", "seed", "max_iter", "lloyd_passes", "batch_rows"):
        if key in cfg:
            args += ["--" + key.replace("_", "-"), str(cfg[key])]
    return args


def same_files(a: Path, b: Path, pattern: str) -> int:
    names = sorted(p.name for p in a.glob(pattern))
    assert names and names == sorted(p.name for p in b.glob(pattern))
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    return len(names)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["l2", "cosine-3-levels", "ip-lloyd"])
def test_fit_equals_the_cli_byte_for_byte(tmp_path, small_dataset, cfg):
    run_megatax("fit", "--input", small_dataset, "--storage", str(tmp_path / "tax_cli"),
                "--output", str(tmp_path / "out_cli"), "--quiet", *cli_args(cfg))
    engine = TaxonomyEngine(storage_uri="file://" + str(tmp_path / "tax_py"), **cfg)
    report = engine.fit(input="file://" + small_dataset, output=str(tmp_path / "out_py"),
                        progress=False)
    assert same_files(tmp_path / "out_cli", tmp_path / "out_py", "*.npy") == 9
    for level in range(1, cfg["n_levels"] + 1):
        same_files(tmp_path / "tax_cli" / f"level-{level}", tmp_path / "tax_py" / f"level-{level}",
                   "*.npy")
    assert report["points"] == 20000 and len(report["levels"]) == cfg["n_levels"]
    assert report["resumed_from_level"] == 0
    assert [lv["level"] for lv in report["levels"]] == list(range(1, cfg["n_levels"] + 1))
    assert engine.fitted and engine.dim == 32
    c = np.load(tmp_path / "tax_cli" / "level-1" / "centroids.npy")
    np.testing.assert_array_equal(engine.centroids(1), c)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, small_dataset):
    """A 2-level taxonomy fitted by the CLI, plus its storage and output folders."""
    root = tmp_path_factory.mktemp("fitted")
    run_megatax("fit", "--input", small_dataset, "--storage", str(root / "tax"),
                "--output", str(root / "out"), "--levels", "2", "--branching", "8", "--quiet")
    return root


def test_predict_array_equals_cli_outputs(fitted, small_dataset):
    engine = TaxonomyEngine.load(str(fitted / "tax"))
    assert engine.fitted and engine.n_levels == 2 and engine.dim == 32
    shard = sorted(Path(small_dataset).parent.glob("part-*.npy"))[1]
    x = np.load(shard)
    paths, dist = engine.predict(x, return_distances=True)
    assert paths.dtype == np.int32 and paths.shape == (len(x), 2)
    assert dist.dtype == np.float32 and dist.shape == (len(x),)
    stem = shard.name[: -len(".npy")]
    np.testing.assert_array_equal(paths, np.load(fitted / "out" / f"{stem}.paths.npy"))
    np.testing.assert_array_equal(dist, np.load(fitted / "out" / f"{stem}.dist.npy"))
    # float64 and float16 inputs: the one conversion / read in place; same paths for f64.
    np.testing.assert_array_equal(engine.predict(x.astype(np.float64)), paths)
    assert engine.predict(x[:100].astype(np.float16)).shape == (100, 2)
    assert engine.predict(np.zeros((0, 32), np.float32)).shape == (0, 2)


def test_predict_uri_with_and_without_output(fitted, small_dataset, tmp_path):
    engine = TaxonomyEngine.load("file://" + str(fitted / "tax"))
    assert engine.predict(small_dataset, output=str(tmp_path / "pred")) is None
    same_files(fitted / "out", tmp_path / "pred", "*.paths.npy")
    same_files(fitted / "out", tmp_path / "pred", "*.dist.npy")
    run_megatax("predict", "--storage", str(fitted / "tax"), "--input", small_dataset,
                "--output", str(tmp_path / "pred_cli"), "--quiet")
    same_files(tmp_path / "pred_cli", tmp_path / "pred", "*.npy")
    # The seed's form: paths of every row of the glob, in global-id order.
    paths = engine.predict(small_dataset)
    expected = np.concatenate([np.load(p) for p in sorted((fitted / "out").glob("*.paths.npy"))])
    np.testing.assert_array_equal(paths, expected)
    paths2, dist = engine.predict(Path(small_dataset), return_distances=True)
    np.testing.assert_array_equal(paths2, expected)
    assert dist.shape == (20000,)


def test_info_is_the_manifest(fitted):
    engine = TaxonomyEngine.load(str(fitted / "tax"))
    info = engine.info()
    assert info == json.loads((fitted / "tax" / "taxonomy.json").read_text())
    assert info["status"] == "complete" and info["dim"] == 32
    assert info["config"]["branching_factor"] == [8]
    assert engine.nodes_per_level() == [8, 64]
    assert TaxonomyEngine(storage_uri="x").info() == {}
    config = engine.config
    assert isinstance(config, TaxonomyConfig) and config.n_levels == 2
    assert "fitted=True" in repr(engine)


def test_seed_usage_shape(tmp_path):
    """The seed README's calls, on a small generated dataset."""
    shards = generate(tmp_path / "shards", n=3000, dim=16, shards=2)
    engine = TaxonomyEngine(n_levels=2, branching_factor=5, dim=16,
                            storage_uri="file://" + str(tmp_path / "taxonomy") + "/")
    engine.fit(input="file://" + shards, output="file://" + str(tmp_path / "paths") + "/",
               progress=False)
    paths = engine.predict("file://" + shards)
    assert paths.shape == (3000, 2)
    assert (paths[:, 0] >= 0).all() and (paths[:, 0] < 5).all()


def test_errors_have_messages_and_codes(tmp_path, small_dataset, fitted):
    with pytest.raises(MegataxValueError, match="branching_factor: 3 values given for 2 levels") as e:
        TaxonomyEngine(n_levels=2, branching_factor=[2, 3, 4], storage_uri="x")
    assert e.value.code == "invalid_argument"
    with pytest.raises(MegataxValueError, match="storage_uri is required"):
        TaxonomyEngine()
    with pytest.raises(MegataxValueError, match="metric: unknown value 'manhattan'"):
        TaxonomyEngine(storage_uri="x", metric="manhattan")
    with pytest.raises(TypeError):
        TaxonomyEngine(storage_uri="x", n_levels="three")
    with pytest.raises(TypeError):
        TaxonomyEngine(storage_uri="x", branching_factor=True)
    with pytest.raises(TypeError):
        TaxonomyEngine(storage_uri="x", unknown_field=1)
    with pytest.raises(MegataxNotFoundError, match="no files match") as e:
        TaxonomyEngine(storage_uri=str(tmp_path / "t")).fit(str(tmp_path / "none-*.npy"),
                                                           str(tmp_path / "o"), progress=False)
    assert e.value.code == "not_found" and isinstance(e.value, FileNotFoundError)
    with pytest.raises(MegataxError, match="already exists") as e:
        TaxonomyEngine(storage_uri=str(fitted / "tax"), branching_factor=8, n_levels=2).fit(
            small_dataset, str(tmp_path / "o"), progress=False)
    assert e.value.code == "already_exists"
    with pytest.raises(MegataxValueError, match="dim 32, config dim is 64"):
        TaxonomyEngine(storage_uri=str(tmp_path / "t2"), dim=64, branching_factor=8,
                       n_levels=2).fit(small_dataset, str(tmp_path / "o"), progress=False)
    with pytest.raises(FileNotFoundError, match="taxonomy.json"):
        TaxonomyEngine.load(tmp_path / "nothing")
    fresh = TaxonomyEngine(storage_uri="x")
    with pytest.raises(MegataxError, match="not fitted") as e:
        fresh.predict(np.zeros((2, 32), np.float32))
    assert e.value.code == "failed_precondition"
    engine = TaxonomyEngine.load(str(fitted / "tax"))
    with pytest.raises(MegataxValueError, match="vectors have dim 31, taxonomy has dim 32"):
        engine.predict(np.zeros((2, 31), np.float32))
    with pytest.raises(MegataxValueError, match="2-D array"):
        engine.predict(np.zeros(32, np.float32))
    with pytest.raises(ValueError, match="output is only for a URI"):
        engine.predict(np.zeros((2, 32), np.float32), output="x")
    with pytest.raises(MegataxError, match="level 3 is not in") as e:
        engine.centroids(3)
    assert e.value.code == "out_of_range"


def test_log_lines_and_a_raising_log_stop_the_fit(tmp_path, small_dataset):
    lines = []
    engine = TaxonomyEngine(n_levels=2, branching_factor=8, storage_uri=str(tmp_path / "t"))
    engine.fit(small_dataset, str(tmp_path / "o"), log=lines.append, progress=False)
    assert lines[0] == "level 1/2: training" and lines[-1].startswith("level 2/2: 64 nodes")

    class Stop(Exception):
        pass

    def stop_at_level_2(line):
        if line.startswith("level 2/2: training"):
            raise Stop(line)

    engine = TaxonomyEngine(n_levels=2, branching_factor=8, storage_uri=str(tmp_path / "t2"))
    with pytest.raises(Stop, match="level 2/2"):
        engine.fit(small_dataset, str(tmp_path / "o2"), log=stop_at_level_2, progress=False)
    manifest = json.loads((tmp_path / "t2" / "taxonomy.json").read_text())
    assert manifest["status"] == "fitting" and manifest["levels_done"] == 1
    report = engine.fit(small_dataset, str(tmp_path / "o2"), resume=True, progress=False)
    assert report["resumed_from_level"] == 1
    same_files(tmp_path / "o", tmp_path / "o2", "*.npy")
    same_files(tmp_path / "t" / "level-2", tmp_path / "t2" / "level-2", "*.npy")


def test_log_callback_cannot_reenter_its_engine(tmp_path, small_dataset):
    engine = TaxonomyEngine(n_levels=2, branching_factor=8, storage_uri=str(tmp_path / "t"))
    with pytest.raises(MegataxError, match="already inside a call of this engine") as e:
        engine.fit(small_dataset, str(tmp_path / "o"), log=lambda line: engine.info(),
                   progress=False)
    assert e.value.code == "failed_precondition"


def test_executor_option(tmp_path, small_dataset, fitted):
    engine = TaxonomyEngine(n_levels=2, branching_factor=8, storage_uri=str(tmp_path / "t"))
    engine.fit(small_dataset, str(tmp_path / "o"), executor="local", progress=False)
    same_files(fitted / "out", tmp_path / "o", "*.npy")
    with pytest.raises(MegataxValueError, match="executor: unknown value 'bogus'"):
        TaxonomyEngine(n_levels=2, branching_factor=8, storage_uri=str(tmp_path / "t2")).fit(
            small_dataset, str(tmp_path / "o2"), executor="bogus", progress=False)


def test_keyword_defaults_are_the_engines():
    """TaxonomyEngine's keyword defaults are megatax::TaxonomyConfig's (no drift)."""
    import inspect

    defaults = TaxonomyConfig()
    for name, p in inspect.signature(TaxonomyEngine.__init__).parameters.items():
        if name == "self":
            continue
        value = getattr(defaults, name)
        if name == "branching_factor":
            value = value[0] if len(value) == 1 else value
        assert p.default == value, f"{name}: Python default {p.default!r}, C++ {value!r}"
