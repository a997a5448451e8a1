"""Style is checked like behaviour: ruff (pyflakes, pycodestyle, bugbear, import order, no print in the library)."""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(pathlib.Path(sys.executable).parent / "ruff")
    if not pathlib.Path(ruff).exists():
        pytest.fail("ruff is not installed; run ./run setup (it is pinned in Resources/requirements-lock.txt)")
    proc = subprocess.run([ruff, "check", "HybridAttentionSeg", "Testing"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
