"""Shared fixtures of the mega_taxonomy tests (pytest; run by scripts/test-python.sh).

The tests use the installed package and the `megatax` command installed beside it (the
scripts folder of this Python), never the build tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def megatax_path() -> str:
    """The `megatax` command installed by the wheel into this Python's scripts folder."""
    exe = Path(sysconfig.get_path("scripts")) / "megatax"
    if exe.exists():
        return str(exe)
    found = shutil.which("megatax")
    if found is None:
        pytest.fail("the megatax command is not installed (pip install the mega_taxonomy wheel)")
    return found


@pytest.fixture(scope="session")
def megatax() -> str:
    return megatax_path()


def run_megatax(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Runs `megatax ARGS`; fails the test with its stderr when it exits non-zero."""
    proc = subprocess.run(
        [megatax_path(), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        pytest.fail(f"megatax {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def generate(folder: Path, *, n: int, dim: int, levels: int = 2, branching: int = 8,
             shards: int = 3, seed: int = 7, dtype: str = "f32") -> str:
    """`megatax gen` into folder; returns the glob of its vector shards."""
    run_megatax("gen", "--out", str(folder), "--n", str(n), "--dim", str(dim),
                "--levels", str(levels), "--branching", str(branching),
                "--shards", str(shards), "--seed", str(seed), "--dtype", dtype)
    return str(folder / "part-*.npy")


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> str:
    """20,000 x 32 float32 vectors of a 2-level, 8-way hierarchy in 3 shards."""
    return generate(tmp_path_factory.mktemp("small"), n=20000, dim=32)


def python_env() -> dict:
    """The environment for child Python processes (no user site, unbuffered)."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable
