"""The installed package: stubs and docstrings, the megatax command, a fresh venv."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mega_taxonomy
from conftest import REPO, megatax_path
from mega_taxonomy import _core

PACKAGE = Path(mega_taxonomy.__file__).parent


def stub_names(path: Path) -> dict:
    """{class name: {member names}} and {"": {function names}} of a .pyi file."""
    tree = ast.parse(path.read_text())
    out = {"": set()}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign):
                    members.add(item.target.id)
            out[node.name] = members
        elif isinstance(node, ast.FunctionDef):
            out[""].add(node.name)
    return out


def test_stubs_match_the_compiled_module():
    stubs = stub_names(PACKAGE / "_core.pyi")
    runtime_functions = {n for n, v in vars(_core).items() if callable(v) and not isinstance(v, type)}
    assert stubs[""] == runtime_functions
    classes = {n for n, v in vars(_core).items() if isinstance(v, type)}
    assert set(stubs) - {""} == classes
    for name in classes:
        cls = getattr(_core, name)
        public = {m for m in vars(cls) if not m.startswith("_") or m in ("__init__", "__len__")}
        assert public - stubs[name] == set(), f"{name}: not in _core.pyi: {public - stubs[name]}"
        assert stubs[name] - set(dir(cls)) == set(), f"{name}: stubbed but missing"
    assert (PACKAGE / "py.typed").exists()


def test_public_api_has_docstrings():
    for name in mega_taxonomy.__all__:
        obj = getattr(mega_taxonomy, name)
        if name == "__version__":
            continue
        assert inspect.getdoc(obj), name
        if isinstance(obj, type):
            for member, value in vars(obj).items():
                if member.startswith("_") or not callable(value) and not isinstance(value, property):
                    continue
                assert inspect.getdoc(getattr(obj, member)), f"{name}.{member}"


def test_version_matches_cmake_project():
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert f"project(mega_taxonomy VERSION {mega_taxonomy.__version__} " in cmake


def test_megatax_command_is_installed():
    proc = subprocess.run([megatax_path(), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: megatax <command>" in proc.stdout
    proc = subprocess.run([megatax_path(), "fit"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--input is required" in proc.stderr


def find_wheel() -> Path | None:
    if os.environ.get("MEGATAX_WHEEL"):
        return Path(os.environ["MEGATAX_WHEEL"])
    wheels = sorted((REPO / "build" / "wheelhouse").glob("mega_taxonomy-*.whl"),
                    key=lambda p: p.stat().st_mtime)
    return wheels[-1] if wheels else None


def test_wheel_installs_into_a_fresh_venv(tmp_path):
    wheel = find_wheel()
    if wheel is None:
        pytest.skip("no wheel in build/wheelhouse (scripts/test-python.sh builds one)")
    venv = tmp_path / "venv"
    # numpy comes from this Python's site-packages (no network needed); the package
    # itself must come from the wheel, into the venv.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--ignore-installed", "--disable-pip-version-check", str(wheel)],
                   check=True, timeout=300)
    code = (
        "import mega_taxonomy, numpy as np, sys\n"
        "assert mega_taxonomy.__file__.startswith(sys.prefix), mega_taxonomy.__file__\n"
        "i = mega_taxonomy.IndexFlatL2(4); i.add(np.eye(4, dtype=np.float32))\n"
        "D, I = i.search(np.eye(4, dtype=np.float32), 1)\n"
        "assert list(I[:, 0]) == [0, 1, 2, 3]\n"
        "print('ok', mega_taxonomy.__version__)\n"
    )
    proc = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("ok "), proc.stderr
    proc = subprocess.run([str(venv / "bin" / "megatax"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "usage: megatax" in proc.stdout
