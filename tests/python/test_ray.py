"""mega_taxonomy.ray on a local Ray instance (127.0.0.1 only, 4 CPUs, one per module).

The reference is the single-process fit of the same data and config: the Ray fit must write
the same model files and outputs, byte for byte -- on 2 and 3 workers, after a worker actor
killed mid-level, and after the driver was killed and the fit resumed. Also: dynamic shard
dispatch seen in the per-worker log (a slowed worker takes fewer shards), and unreadable
shards fail at once, naming the file, without retries. Without Ray: the package imports, and
the binding's fit_with_callbacks runs the SPMD fit on Python threads acting as ranks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import python_env
from mega_taxonomy import MegataxError, MegataxNotFoundError, TaxonomyEngine
from mega_taxonomy.ray import fit_on_ray  # imports no Ray (test_imports_without_ray)

# Read when Ray is imported: a one-machine instance on the loopback address, no usage stats.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

CONFIG = dict(n_levels=3, branching_factor=[4, 3, 3], sample_per_centroid=64, threads=1)
SIZES = [5000, 300, 9000, 7, 4000, 6100, 1500, 2222, 3333]  # unequal, more shards than workers
N = sum(SIZES)


def test_imports_without_ray(python):
    code = (
        "import sys; sys.modules['ray'] = None  # as if Ray were not installed\n"
        "import mega_taxonomy, mega_taxonomy.ray\n"
        "from mega_taxonomy.ray import fit_on_ray\n"
        "try:\n"
        "    fit_on_ray(dict(storage_uri='x', branching_factor=2), 'in', 'out')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "mega_taxonomy.ray needs Ray: pip install 'ray==2.60.0'" in proc.stdout


class ThreadRendezvous:
    """The coordinator's two calls for threads acting as ranks (no Ray): the k-th allgather
    of every rank meets the others' k-th; one fetch-and-add counter per pass."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.cv = threading.Condition()
        self.slots: dict = {}
        self.counters: dict = {}

    def allgather(self, seq: int, rank: int, payload: bytes) -> list:
        with self.cv:
            parts = self.slots.setdefault(seq, [None] * self.workers)
            parts[rank] = payload
            self.cv.notify_all()
            assert self.cv.wait_for(lambda: all(p is not None for p in parts), timeout=60)
            return list(parts)

    def next_shard(self, round_: int, n_shards: int) -> int:
        with self.cv:
            claimed = self.counters.get(round_, 0)
            self.counters[round_] = claimed + 1
            return claimed if claimed < n_shards else -1


def test_fit_with_python_callbacks_on_threads(data, tmp_path):
    """The binding alone (no Ray): two threads as ranks, each its own engine, give the local
    fit's bytes; an exception raised by a callback comes out of the fit as it was raised."""
    from mega_taxonomy import _core

    root, glob = data
    config = TaxonomyEngine(storage_uri=str(tmp_path / "tax"), **CONFIG).config
    rv = ThreadRendezvous(2)
    reports, errors = [None, None], []

    def rank_main(rank: int) -> None:
        seq = iter(range(1 << 30))
        try:
            reports[rank] = _core._TaxonomyEngine(config).fit_with_callbacks(
                glob, str(tmp_path / "out"), False, rank, 2, rv.next_shard,
                lambda payload: rv.allgather(next(seq), rank, payload))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert_same_tree(root / "ref", root / "ref-out", tmp_path / "tax", tmp_path / "out")
    assert reports[0]["points"] == N and len(reports[0]["levels"]) == 3

    class Boom(Exception):
        pass

    def failing_next_shard(round_: int, n_shards: int) -> int:
        if round_ == 1:  # level 2's pass
            raise Boom("the transport broke")
        return rv1.next_shard(round_, n_shards)

    rv1 = ThreadRendezvous(1)
    engine = _core._TaxonomyEngine(TaxonomyEngine(storage_uri=str(tmp_path / "t2"), **CONFIG).config)
    with pytest.raises(Boom, match="the transport broke"):
        engine.fit_with_callbacks(glob, str(tmp_path / "o2"), False, 0, 1, failing_next_shard,
                                  lambda payload: [payload])
    assert json.loads((tmp_path / "t2" / "taxonomy.json").read_text())["levels_done"] == 1
    with pytest.raises(TypeError, match="allgather"):  # not a list of bytes
        engine.fit_with_callbacks(glob, str(tmp_path / "o2"), True, 0, 1, rv1.next_shard,
                                  lambda payload: 42)
    with pytest.raises(MegataxError, match="returned 2 parts for 1 workers") as e:
        engine.fit_with_callbacks(glob, str(tmp_path / "o2"), True, 0, 1, rv1.next_shard,
                                  lambda payload: [payload, payload])
    assert e.value.code == "internal"
    # The storage kept level 1: a resume with good callbacks ends with the local fit's tree.
    report = engine.fit_with_callbacks(glob, str(tmp_path / "o2"), True, 0, 1,
                                       ThreadRendezvous(1).next_shard, lambda payload: [payload])
    assert report["resumed_from_level"] == 1
    assert_same_tree(root / "ref", root / "ref-out", tmp_path / "t2", tmp_path / "o2")


@pytest.fixture(scope="module")
def gcs_address():
    """One local Ray instance for the module (fit_on_ray uses it as it is)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR",
             namespace="mega_taxonomy_tests")
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def write_shards(folder: Path, seed: int = 3) -> str:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, 12)).astype(np.float32) * 4
    for i, n in enumerate(SIZES):
        x = centres[rng.integers(0, 40, n)] + rng.normal(size=(n, 12)).astype(np.float32)
        np.save(folder / f"part-{i:03d}.npy", x.astype(np.float32))
    return str(folder / "part-*.npy")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The shards and the local (single-process) fit of CONFIG on them."""
    root = tmp_path_factory.mktemp("ray")
    glob = write_shards(root / "data")
    TaxonomyEngine(storage_uri=str(root / "ref"), **CONFIG).fit(
        glob, str(root / "ref-out"), progress=False, executor="local")
    return root, glob


def assert_same_tree(ref: Path, ref_out: Path, tax: Path, out: Path, levels: int = 3) -> None:
    for level in range(1, levels + 1):
        names = sorted(p.name for p in (ref / f"level-{level}").iterdir())
        assert names == sorted(p.name for p in (tax / f"level-{level}").iterdir())
        for name in names:
            assert (ref / f"level-{level}" / name).read_bytes() == \
                (tax / f"level-{level}" / name).read_bytes(), f"level-{level}/{name}"
    outputs = sorted(p.name for p in ref_out.iterdir())
    assert len(outputs) == 3 * len(SIZES) and outputs == sorted(p.name for p in out.iterdir())
    for name in outputs:
        assert (ref_out / name).read_bytes() == (out / name).read_bytes(), name
    manifest = json.loads((tax / "taxonomy.json").read_text())
    assert manifest["status"] == "complete" and manifest["levels_done"] == levels
    assert not (tax / "state").exists()


ASSIGNED = re.compile(r"^rank (\d+)/(\d+): level (\d+): assigned (\d+) shards \[([0-9,]*)\]")


def shards_by_level(report: dict) -> dict:
    """{level: {rank: [shards]}} from each worker's own log lines."""
    out: dict = {}
    for worker in report["workers"]:
        for line in worker["log"]:
            m = ASSIGNED.match(line)
            if m:
                assert int(m.group(1)) == worker["rank"]
                shards = [int(s) for s in m.group(5).split(",") if s]
                assert len(shards) == int(m.group(4))
                out.setdefault(int(m.group(3)), {})[worker["rank"]] = shards
    return out


@pytest.mark.parametrize("workers", [2, 3])
def test_same_tree_as_the_local_fit(gcs_address, data, tmp_path, workers):
    root, glob = data
    lines = []
    report = fit_on_ray(dict(CONFIG, storage_uri=str(tmp_path / "tax")), glob,
                        str(tmp_path / "out"), num_workers=workers, log=lines.append)
    assert_same_tree(root / "ref", root / "ref-out", tmp_path / "tax", tmp_path / "out")
    assert report["executor"] == "ray" and report["attempts"] == 1
    # Per level: one claim per shard plus one "all claimed" per worker (the last level's pass
    # writes the outputs: no pass after the levels).
    assert report["transport"]["shard_claims"] == 3 * (len(SIZES) + workers)
    assert report["transport"]["allgathers"] > 0 and report["transport"]["allgather_bytes"] > 0
    assert report["points"] == N and [lv["level"] for lv in report["levels"]] == [1, 2, 3]
    assert [w["rank"] for w in report["workers"]] == list(range(workers))
    assert all(w["node"] == "127.0.0.1" and w["restarts"] == 0 for w in report["workers"])
    # Every level's pass ran each shard exactly once, over the workers.
    by_level = shards_by_level(report)
    assert sorted(by_level) == [1, 2, 3]
    for level, ranks in by_level.items():
        assert sorted(s for shards in ranks.values() for s in shards) == list(range(len(SIZES)))
    # The driver's log: worker 0's level steps in order, per-worker lines with the pid.
    steps = [ln for ln in lines if ln.startswith("level ")]
    assert steps[0] == "level 1/3: training" and steps[-1].startswith("level 3/3: 36 nodes")
    assert steps.index("level 2/3: training") > [i for i, ln in enumerate(steps)
                                                  if ln.startswith("level 1/3: 4 nodes")][0]
    pid = report["workers"][workers - 1]["pid"]
    assert any(ln.startswith(f"ray worker {workers - 1}/{workers} (pid {pid} on 127.0.0.1): "
                             "level 2: assigned ") for ln in lines)


def test_engine_fit_with_the_ray_executor(gcs_address, data, tmp_path):
    root, glob = data
    engine = TaxonomyEngine(storage_uri=str(tmp_path / "tax"), **CONFIG)
    report = engine.fit(glob, str(tmp_path / "out"), executor="ray", workers=2, progress=False)
    assert report["executor"] == "ray" and len(report["workers"]) == 2
    assert_same_tree(root / "ref", root / "ref-out", tmp_path / "tax", tmp_path / "out")
    assert engine.fitted and engine.nodes_per_level() == [4, 12, 36]
    x = np.load(root / "data" / "part-001.npy")
    np.testing.assert_array_equal(engine.predict(x),
                                  np.load(root / "ref-out" / "part-001.paths.npy"))
    with pytest.raises(ValueError, match="executor='ray'"):
        engine.fit(glob, str(tmp_path / "o2"), executor="local", workers=2)


def test_worker_killed_mid_level_gives_the_same_tree(gcs_address, data, tmp_path):
    root, glob = data
    lines = []
    # Worker 1 SIGKILLs itself in level 2's assignment pass (first life only); worker 0 is
    # slowed down so that worker 1 surely claims a shard of that pass.
    env = {"MEGATAX_TEST_CRASH_RANK": "1", "MEGATAX_TEST_CRASH_LEVEL": "2",
           "MEGATAX_TEST_SLOW_RANK": "0"}
    report = fit_on_ray(dict(CONFIG, storage_uri=str(tmp_path / "tax")), glob,
                        str(tmp_path / "out"), num_workers=2, env=env, log=lines.append)
    assert_same_tree(root / "ref", root / "ref-out", tmp_path / "tax", tmp_path / "out")
    assert report["attempts"] == 2
    assert report["resumed_from_level"] == 1  # the second attempt redid level 2 only
    assert [lv["level"] for lv in report["levels"]] == [2, 3]
    assert [w["restarts"] for w in report["workers"]] == [0, 1]
    first_pid = int(re.search(r"1: pid (\d+)", lines[0]).group(1))
    assert report["workers"][1]["pid"] != first_pid
    text = "\n".join(lines)
    assert "ray: attempt 1 failed: worker 1 died" in text
    assert f"ray: worker 1 restarted: pid {report['workers'][1]['pid']}" in text
    assert "ray: attempt 2/3 on 2 workers (resume)" in text


def test_dynamic_dispatch_in_the_per_worker_log(gcs_address, data, tmp_path):
    root, glob = data
    config = dict(CONFIG, n_levels=1, branching_factor=4)
    TaxonomyEngine(storage_uri=str(tmp_path / "ref"), **config).fit(
        glob, str(tmp_path / "ref-out"), progress=False, executor="local")
    lines = []
    # Worker 1 sleeps 300 ms before each shard it claims: worker 0 takes most of them.
    report = fit_on_ray(dict(config, storage_uri=str(tmp_path / "tax")), glob,
                        str(tmp_path / "out"), num_workers=2,
                        env={"MEGATAX_TEST_SLOW_RANK": "1"}, log=lines.append)
    assert_same_tree(tmp_path / "ref", tmp_path / "ref-out", tmp_path / "tax",
                     tmp_path / "out", levels=1)
    ranks = shards_by_level(report)[1]
    assert sorted(ranks[0] + ranks[1]) == list(range(len(SIZES)))
    assert len(ranks[0]) > len(ranks[1]), ranks
    printed = [ln for ln in lines if re.match(r"ray worker \d/2 \(pid \d+ on 127.0.0.1\): "
                                              r"level 1: assigned", ln)]
    assert len(printed) == 2, lines


def test_unreadable_shards_fail_at_once_naming_the_file(gcs_address, data, tmp_path):
    root, _ = data
    # A shard shorter than its header says: every worker fails to open it.
    bad = tmp_path / "truncated"
    shutil.copytree(root / "data", bad)
    raw = (bad / "part-004.npy").read_bytes()
    (bad / "part-004.npy").write_bytes(raw[: len(raw) // 2])
    lines = []
    t0 = time.monotonic()
    with pytest.raises(MegataxError, match=r"part-004\.npy.*\(ray worker \d/2 on 127.0.0.1\)") \
            as e:
        fit_on_ray(dict(CONFIG, storage_uri=str(tmp_path / "t1")), str(bad / "part-*.npy"),
                   str(tmp_path / "o1"), num_workers=2, log=lines.append)
    assert e.value.code == "data_loss"
    assert [ln for ln in lines if ln.startswith("ray: attempt")] == ["ray: attempt 1/3 on 2 workers"]
    assert any("not retried" in ln for ln in lines)

    # A shard that opens but whose rows cannot be used (a NaN): only the worker that reads it
    # fails, mid-level; the other is woken from its collective and the error is raised.
    bad = tmp_path / "nan"
    shutil.copytree(root / "data", bad)
    x = np.load(bad / "part-006.npy")
    x[777, 3] = np.nan
    np.save(bad / "part-006.npy", x)
    lines = []
    with pytest.raises(MegataxError, match=r"part-006\.npy: row 777 .*non-finite") as e:
        fit_on_ray(dict(CONFIG, storage_uri=str(tmp_path / "t2")), str(bad / "part-*.npy"),
                   str(tmp_path / "o2"), num_workers=2, log=lines.append)
    assert e.value.code == "data_loss"
    assert [ln for ln in lines if ln.startswith("ray: attempt")] == ["ray: attempt 1/3 on 2 workers"]
    manifest = tmp_path / "t2" / "taxonomy.json"
    assert not manifest.exists() or json.loads(manifest.read_text())["status"] == "fitting"

    # Nothing matches on the workers.
    with pytest.raises(MegataxNotFoundError, match="no files match"):
        fit_on_ray(dict(CONFIG, storage_uri=str(tmp_path / "t3")), str(tmp_path / "none-*.npy"),
                   str(tmp_path / "o3"), num_workers=2, progress=False)
    assert time.monotonic() - t0 < 60


def test_driver_killed_then_resume(gcs_address, data, tmp_path):
    """`python -m mega_taxonomy.ray` (a second driver on the same cluster) killed (SIGKILL)
    after level 1 committed: its workers go with it, and fit_on_ray(resume=True) ends with
    the same tree."""
    root, glob = data
    tax, out = tmp_path / "tax", tmp_path / "out"
    log = tmp_path / "driver.log"
    # Joins the running instance through RAY_ADDRESS, as a `ray job submit` driver does.
    cmd = [sys.executable, "-m", "mega_taxonomy.ray",
           "--input", glob, "--storage", str(tax), "--output", str(out),
           "--levels", "3", "--branching", "4,3,3", "--sample-per-centroid", "64",
           "--threads", "1", "--workers", "2", "--env", "MEGATAX_TEST_SLOW_RANK=1"]
    with open(log, "w") as f:
        driver = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                  env=dict(python_env(), RAY_ADDRESS=gcs_address))
    manifest = tax / "taxonomy.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None:
        if manifest.exists() and json.loads(manifest.read_text())["levels_done"] >= 1:
            break
        time.sleep(0.02)
    assert driver.poll() is None, log.read_text()
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    state = json.loads(manifest.read_text())
    assert state["status"] == "fitting" and 1 <= state["levels_done"] < 3, state
    # Its worker actors are owned by the dead driver: Ray ends them.
    pids = [int(p) for p in re.findall(r"\d+: pid (\d+) on", log.read_text())]
    assert len(pids) == 2, log.read_text()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)

    report = fit_on_ray(dict(CONFIG, storage_uri=str(tax)), glob, str(out), num_workers=2,
                        resume=True, progress=False)
    assert report["resumed_from_level"] == state["levels_done"]
    assert_same_tree(root / "ref", root / "ref-out", tax, out)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its parent is gone for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
    return True
