"""Tiny datasets in the Medical Segmentation Decathlon layout (``dataset.json``, ``imagesTr/``, ``labelsTr/``).

Each case is a bright ball (label 1) with a brighter core (label 2) in a noisy background, at a position drawn
from the case's own seed, so that a network can learn it in a few steps and every case differs.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

LABELS = {"0": "background", "1": "ball", "2": "core"}


def ball_case(seed: int, shape=(32, 32, 32)) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, labels uint8) of one case."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    centre = np.array(shape, np.float32) / 2 + rng.uniform(-4, 4, 3)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
    labels = np.where(distance < 5, 2, np.where(distance < 10, 1, 0)).astype(np.uint8)
    image = (labels * 40.0 + 100.0 + rng.normal(0, 5, shape)).astype(np.float32)
    return image, labels


def write_msd(root: Path, count: int = 5, shape=(32, 32, 32), affine=None, labels=None, first_seed: int = 0,
              name: str = "Task99_Balls") -> Path:
    """Write ``count`` cases and their ``dataset.json`` under ``root``; returns ``root``."""
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = np.eye(4) if affine is None else affine
    training = []
    for index in range(count):
        image, label = ball_case(first_seed + index, shape)
        stem = f"ball_{index:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / stem))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / stem))
        training.append({"image": f"./imagesTr/{stem}", "label": f"./labelsTr/{stem}"})
    manifest = {"name": name, "modality": {"0": "MRI"}, "labels": labels or LABELS, "training": training}
    (root / "dataset.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return root
