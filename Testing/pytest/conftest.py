"""Shared pytest fixtures.

``headless_app``: a fresh Qt-free Slicer (slicer-core) scene with the module logics registered, one per test.
``slicer.mrmlScene`` is a process-wide global that :class:`HeadlessSlicer` points at its own scene, so the
fixture is function-scoped: every test gets its own scene and the scene is cleared afterwards.
Other engineers may append fixtures below.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The suite runs the reference torch fp32 path: the fast path's one-time calibration and OpenVINO conversion
# (seconds per model and attention variant) would be paid by every tiny test model. test_fastpath.py tests it.
os.environ.setdefault("HYBRIDSEG_FAST_PATH", "off")
# the project is not necessarily pip-installed: make ``HybridAttentionSegLib`` importable
if str(ROOT / "HybridAttentionSeg") not in sys.path:
    sys.path.insert(0, str(ROOT / "HybridAttentionSeg"))

# --- required parts never skip (issue 10) --------------------------------------------------------------------
#: what the suite needs (Resources/requirements-lock.txt and the project itself): when one of these does not
#: import, tests must fail, not skip; only truly optional extras (openvino, a browser) may skip
REQUIRED_MODULES = ("HybridAttentionSegLib", "slicer", "vtk", "torch", "monai", "SimpleITK", "nibabel", "nrrd",
                    "nilearn", "scipy", "safetensors", "numpy", "matplotlib")
_importorskip = pytest.importorskip


def _importorskip_unless_required(modname: str, *args, **kwargs):
    """``pytest.importorskip`` for optional modules; a plain import (an error fails the test) for required ones."""
    if modname.split(".")[0] in REQUIRED_MODULES:
        return importlib.import_module(modname)
    return _importorskip(modname, *args, **kwargs)


pytest.importorskip = _importorskip_unless_required  # also for test files written later


def pytest_sessionstart(session):
    """Stop the whole run at once when a required package is missing (found by spec: nothing is imported here,
    so tests that check what a process imports still see a clean process)."""
    missing = [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.exit(f"required package(s) not installed: {', '.join(missing)}; run ./run setup (tests never "
                    "skip a required part)", returncode=1)


# --- signals reach the tests -------------------------------------------------------------------------------
# A shell without job control starts background commands (`./run test &`, `nohup ... &`) with SIGINT and SIGQUIT
# ignored, and Python then leaves SIGINT ignored: the tests that interrupt a run (in this process or in a child,
# which inherits an ignored signal through exec) would see it do nothing. The suite tests Ctrl-C, so it restores
# Python's own handler; a handler set here is reset to the default in every child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

#: the locale the run started in (read before any test or fixture runs)
_START_LOCALE = __import__("locale").setlocale(__import__("locale").LC_ALL)


@pytest.fixture(autouse=True)
def _locale_kept():
    """Every test ends in the locale the run started in.

    ITK's GDCM writer (the tests' DICOM series are written with SimpleITK; the product never writes DICOM) leaves
    the whole process in the C locale, where Python's default text encoding is ASCII: later tests' UTF-8 reads
    failed in CI. Product code reads and writes text as UTF-8 explicitly (ruff PLW1514). Restored to the start
    locale, not to the one this test began with: a module-scoped fixture may already have changed that.
    """
    import locale

    yield
    if locale.setlocale(locale.LC_ALL) != _START_LOCALE:
        locale.setlocale(locale.LC_ALL, _START_LOCALE)


@pytest.fixture
def headless_app():
    """A function-scoped :class:`HybridAttentionSegLib.headless.HeadlessSlicer` (slicer-core is required)."""
    from HybridAttentionSegLib.mrml.headless import HeadlessSlicer

    app = HeadlessSlicer()
    yield app
    app.scene.Clear(True)


# --- worker / Logic fixtures (module engineer) ------------------------------------------------------------
#: tiny random-weight Attention U-Net used by the worker and Logic tests (real weights file, real worker)
TINY_MODEL_KWARGS = {"channels": (4, 8, 16, 32), "strides": (2, 2, 2)}


@pytest.fixture(scope="session")
def tiny_catalog(tmp_path_factory):
    """Card files of tiny random-weight models (safetensors, sha256 in the card): ``{model id: card path}``.

    ``tiny-gates`` resamples to 4 mm (a few windows: fast); ``tiny-gates-fine`` to 1 mm (hundreds of windows:
    long enough to cancel mid-run).
    """
    from synthetic import write_random_weights_card

    folder = tmp_path_factory.mktemp("catalog")
    cards = {}
    for model_id, spacing in (("tiny-gates", 4.0), ("tiny-gates-fine", 1.0)):
        path = write_random_weights_card(folder, "attention_unet", TINY_MODEL_KWARGS, (32, 32, 32),
                                         model_id=model_id, spacing=(spacing,) * 3)
        cards[model_id] = str(path)
    return cards


@pytest.fixture(scope="session")
def mni_file(tmp_path_factory):
    """The MNI152 2 mm T1 template (nilearn's copy, see ``core.data.mni``) written as a NIfTI file."""
    import nibabel as nib
    from HybridAttentionSegLib.core.data.mni import load_template

    volume = load_template(2)
    path = tmp_path_factory.mktemp("mni") / "MNI152_T1_2mm.nii.gz"
    nib.save(nib.Nifti1Image(volume.data[0], volume.affine), str(path))
    return path


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Point ``tempfile`` at an empty folder, to see the Logic's private temp folders come and go."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with this machine's two cores, for one test module; its address for children that join it.

    Shut down in teardown. Ray is pinned in the lock: a required part of the suite, never skipped.
    """
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
