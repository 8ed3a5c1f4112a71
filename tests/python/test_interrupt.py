"""Ctrl-C during TaxonomyEngine.fit: KeyboardInterrupt, nothing half-written, resumable.

Each fit runs in a child Python process so that a KeyboardInterrupt cannot stop pytest.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import generate, python_env

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from mega_taxonomy import TaxonomyEngine

    shards, storage, output, mode = sys.argv[1:5]
    engine = TaxonomyEngine(n_levels=3, branching_factor=8, storage_uri=storage, threads=1)

    def log(line):
        print(line, flush=True)
        if mode == "self" and line == "level 2/3: training":
            os.kill(os.getpid(), signal.SIGINT)   # as Ctrl-C would, at a known step

    try:
        engine.fit(shards, output, log=log, progress=False, resume=(mode == "resume"))
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        sys.exit(3)
    print("complete", flush=True)
    """
)


def run_child(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=python_env(), **kwargs)


def manifest(storage: Path) -> dict:
    return json.loads((storage / "taxonomy.json").read_text())


def same_tree(a: Path, b: Path) -> None:
    for level in (1, 2, 3):
        for name in ("centroids.npy", "nodes.npy"):
            assert (a / f"level-{level}" / name).read_bytes() == (b / f"level-{level}" / name).read_bytes()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("interrupt"), n=60000, dim=32, levels=3,
                    branching=8, shards=3)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, dataset):
    root = tmp_path_factory.mktemp("reference")
    child = run_child(dataset, str(root / "tax"), str(root / "out"), "plain")
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0 and "complete" in out, err
    return root


def test_sigint_stops_fit_at_the_next_step_and_resume_finishes_it(tmp_path, dataset, reference):
    storage, output = tmp_path / "tax", tmp_path / "out"
    child = run_child(dataset, str(storage), str(output), "self")
    out, err = child.communicate(timeout=300)
    assert child.returncode == 3, (out, err)
    assert out.splitlines()[-2:] == ["level 2/3: training", "KeyboardInterrupt"]
    m = manifest(storage)
    assert m["status"] == "fitting" and m["levels_done"] == 1
    assert not (storage / "level-2").exists() and not output.exists()
    child = run_child(dataset, str(storage), str(output), "resume")
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0 and "complete" in out, err
    assert out.splitlines()[0] == f"resuming '{storage}' after level 1"
    same_tree(reference / "tax", storage)
    for f in sorted((reference / "out").iterdir()):
        assert f.read_bytes() == (output / f.name).read_bytes(), f.name


def test_external_ctrl_c_during_fit(tmp_path, dataset, reference):
    storage, output = tmp_path / "tax", tmp_path / "out"
    child = run_child(dataset, str(storage), str(output), "plain")
    first = child.stdout.readline()  # the fit has started
    assert first.startswith("level 1/3"), first
    time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=300)
    if child.returncode == 0:
        pytest.skip("the fit finished before the signal arrived")
    assert child.returncode == 3 and out.splitlines()[-1] == "KeyboardInterrupt", (out, err)
    if (storage / "taxonomy.json").exists():
        assert manifest(storage)["status"] == "fitting"
    child = run_child(dataset, str(storage), str(output), "resume")
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    same_tree(reference / "tax", storage)
