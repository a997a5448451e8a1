"""A required part that fails to import fails the run; it never turns tests into skips (issue 10, item 12).

Each case runs a real pytest in a subprocess with a *broken* copy of a required package first on the path
(its ``__init__`` raises ImportError, as a broken install would), and checks the run fails instead of passing
with skips. Optional extras (a module that is simply not installed and not required) may still skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _broken(folder: Path, package: str) -> Path:
    (folder / package).mkdir(parents=True)
    (folder / package / "__init__.py").write_text(f"raise ImportError('simulated broken {package} install')\n")
    return folder


def _pytest(args, pythonpath) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in pythonpath), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_broken_slicer_fails_a_real_test_file_instead_of_skipping_it(tmp_path):
    broken = _broken(tmp_path / "shadow", "slicer")
    proc = _pytest([str(HERE / "test_mrml_inputs.py")], [broken, ROOT / "HybridAttentionSeg"])
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "simulated broken slicer install" in proc.stdout
    assert " skipped" not in proc.stdout.splitlines()[-1], proc.stdout.splitlines()[-1]


def test_importorskip_of_a_required_part_fails_but_an_optional_one_still_skips(tmp_path):
    broken = _broken(tmp_path / "shadow", "torch")
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_required.py").write_text(
        "import pytest\n\ntorch = pytest.importorskip('torch')\n\n\ndef test_uses_torch():\n    assert torch\n")
    (tests / "test_optional.py").write_text(
        "import pytest\n\n\ndef test_optional_extra():\n"
        "    pytest.importorskip('hybridseg_no_such_optional_extra')\n")
    # -p conftest: the suite's own conftest (its hooks and importorskip policy) as a plugin for these files
    required = _pytest(["-p", "conftest", str(tests / "test_required.py")], [broken, HERE, ROOT / "HybridAttentionSeg"])
    assert required.returncode != 0, required.stdout[-2000:]
    assert "simulated broken torch install" in required.stdout
    optional = _pytest(["-p", "conftest", str(tests / "test_optional.py")], [HERE, ROOT / "HybridAttentionSeg"])
    assert optional.returncode == 0 and "1 skipped" in optional.stdout, optional.stdout[-2000:]
