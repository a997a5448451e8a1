"""The wheel works on its own (issue 15 #7): built from this tree, installed into a fresh virtual environment,
run from a folder outside the repository, it lists the bundled models and segments with one.

The fresh environment gets no copy of torch & co.: a ``.pth`` file adds the project environment's
``site-packages`` *after* its own. Python does not process ``.pth`` files inside a path added that way, so the
project's editable install (a ``.pth`` in that folder) does not leak in; the test checks that the package and
the model folder imported are the wheel's. Slow (about 40-60 s on the 2-core CPU): build, install, two
``hybridseg`` processes that import torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
DEMO_MODELS = {"mni-tissue-attention-unet", "mni-tissue-transunet"}
#: what a wheel is built from (the working tree, so uncommitted changes are tested too)
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE",
                "HybridAttentionSeg/HybridAttentionSegLib", "HybridAttentionSeg/Resources/Models")


def test_source_tree_reads_the_module_resources():
    """In Slicer (and in this checkout) the models are the module's own Resources/Models, beside the package."""
    from HybridAttentionSegLib.core import paths

    assert paths.MODELS_DIR == ROOT / "HybridAttentionSeg" / "Resources" / "Models"
    assert not paths.WHEEL_MODELS_DIR.exists()  # the build copies the folder into the wheel, never into the tree
    assert {p.stem for p in paths.catalog_files()} >= DEMO_MODELS


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """``(python, hybridseg, env)`` of a fresh virtual environment holding only the freshly built wheel."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "_resources"))
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = base / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(dist), str(source)], check=True, cwd=source, capture_output=True, timeout=300)
    (wheel,) = dist.glob("hybridattentionseg-*.whl")

    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYBRIDSEG_CATALOG", "VIRTUAL_ENV")}
    env.update(HYBRIDSEG_CACHE=str(base / "cache"), HYBRIDSEG_FAST_PATH="off", OMP_NUM_THREADS="2")
    outside = base / "elsewhere"
    outside.mkdir()
    return python, venv / "bin" / "hybridseg", env, outside, purelib


def test_wheel_imports_its_own_package_and_models(wheel_env):
    python, _, env, outside, purelib = wheel_env
    probe = ("import json, HybridAttentionSegLib as p; from HybridAttentionSegLib.core import paths; "
             "print(json.dumps([p.__file__, str(paths.MODELS_DIR)]))")
    out = subprocess.run([str(python), "-c", probe], env=env, cwd=outside, check=True, capture_output=True,
                         text=True, timeout=120).stdout
    package_file, models_dir = json.loads(out)
    assert Path(package_file).is_relative_to(purelib), package_file  # the wheel's, not the checkout's
    assert Path(models_dir) == purelib / "HybridAttentionSegLib" / "_resources" / "Models"


@pytest.mark.slow
def test_wheel_lists_and_segments_with_bundled_models(wheel_env):
    python, hybridseg, env, outside, purelib = wheel_env
    listed = subprocess.run([str(hybridseg), "models", "--json"], env=env, cwd=outside, capture_output=True,
                            text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    cards = {card["id"]: card for card in json.loads(listed.stdout)}
    assert DEMO_MODELS <= set(cards)
    card = cards["mni-tissue-attention-unet"]
    assert card["bundled"] is True and Path(card["card_path"]).is_relative_to(purelib)

    # the card's bundled sample (the MNI152 template, inside the installed wheel), cut to one sliding window
    sample = Path(card["card_path"]).parent / card["sample_data"]["file"]
    assert sample.is_file()
    image = sitk.ReadImage(str(sample))
    size = np.array(image.GetSize())
    roi = np.array(card["inference"]["roi_size"])
    crop = sitk.RegionOfInterest(image, [int(v) for v in roi], [int(v) for v in (size - roi) // 2])
    sitk.WriteImage(crop, str(outside / "sub01.T1.nii.gz"))

    run = subprocess.run([str(hybridseg), "segment", "sub01.T1.nii.gz", "--model", card["id"], "--out", "out",
                          "--attention", "none", "--no-progress"], env=env, cwd=outside, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(p.name for p in (outside / "out").iterdir()) == ["sub01.T1.json", "sub01.T1.seg.nrrd"]
    labels = sitk.ReadImage(str(outside / "out" / "sub01.T1.seg.nrrd"))
    assert labels.GetSize() == crop.GetSize()
    np.testing.assert_allclose(labels.GetOrigin(), crop.GetOrigin(), atol=1e-4)
    values, counts = np.unique(sitk.GetArrayFromImage(labels), return_counts=True)
    assert set(values) == {0, 1, 2}, values  # a real model on a brain crop finds grey and white matter
    summary = json.loads((outside / "out" / "sub01.T1.json").read_text())
    assert summary["model"] == card["id"]
    assert {s["name"]: s["voxels"] for s in summary["segments"]} == {
        "Gray matter": int(counts[values == 1][0]), "White matter": int(counts[values == 2][0])}
