"""python/README.md's example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO, python_env


def readme_example() -> str:
    text = (REPO / "python" / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    assert blocks, "python/README.md has no ```python block"
    return blocks[0]


def test_readme_example_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path,
                          capture_output=True, text=True, env=python_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
