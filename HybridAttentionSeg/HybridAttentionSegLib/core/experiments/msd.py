"""Datasets in the Medical Segmentation Decathlon layout: ``dataset.json``, ``imagesTr/``, ``labelsTr/``.

:func:`check_msd` reads only ``dataset.json`` and the image headers (SimpleITK ``ReadImageInformation``), so a
malformed dataset (no ``dataset.json``, a listed image or label missing, an image and its label on different
grids, channels that differ from ``modality``) is refused in seconds, before any training, with one line naming
the problem and the remedy. :func:`load_msd` then reads the voxels (``core.inference.io.read_volume``: Slicer's
geometry rules), re-orients each case to RAS, optionally resamples it to isotropic ``spacing`` (MONAI
``Spacingd``'s grid; labels by nearest neighbour) and normalises it like the demo models.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserInputError
from .datasets import INTENSITY, Case, Dataset, split_indices

logger = logging.getLogger(__name__)

LAYOUT = "a Medical Segmentation Decathlon folder (dataset.json, imagesTr/, labelsTr/)"
#: relative tolerance of the grid comparison between an image and its label
GRID_TOLERANCE = 1e-3


@dataclass(frozen=True)
class MsdIndex:
    """What ``dataset.json`` declares, checked against the files."""

    root: Path
    name: str
    classes: list[tuple[int, str]]
    channels: int
    cases: list[tuple[str, Path, Path]]  # (name, image, label)


def _fail(message: str):
    raise UserInputError(message)


def _manifest(root: Path, option: str) -> dict:
    if not root.is_dir():
        _fail(f"{option} {root} is not a folder; pass 'demo' or {LAYOUT}")
    path = root / "dataset.json"
    if not path.is_file():
        _fail(f"{root} has no dataset.json, so it is not {LAYOUT}; add dataset.json with 'labels' and 'training' "
              "or pass --data demo")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        _fail(f"{path} is not valid JSON ({err}); fix the file")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("labels"), dict) \
            or not isinstance(manifest.get("training"), list):
        _fail(f"{path} lacks a 'labels' object or a 'training' list; write them as the Decathlon does "
              "({\"labels\": {\"0\": \"background\", ...}, \"training\": [{\"image\": ..., \"label\": ...}]})")
    return manifest


def _classes(manifest: dict, path: Path) -> list[tuple[int, str]]:
    try:
        labels = {int(k): str(v) for k, v in manifest["labels"].items()}
    except ValueError:
        _fail(f"{path}: every key of 'labels' must be an integer label value; fix 'labels'")
    classes = sorted((v, n) for v, n in labels.items() if v != 0)
    if not classes or min(labels) < 0 or max(labels) > 255:
        _fail(f"{path}: 'labels' must hold background 0 and at least one class value in 1-255; fix 'labels'")
    return classes


def _header(path: Path):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        _fail(f"cannot read the header of {path} ({str(err).strip().splitlines()[-1]}); re-export the file as NIfTI")
    size = reader.GetSize()
    spatial = 3 if reader.GetDimension() >= 3 else reader.GetDimension()
    direction = np.asarray(reader.GetDirection()).reshape(reader.GetDimension(), -1)[:spatial, :spatial]
    channels = reader.GetNumberOfComponents() * (size[3] if len(size) > 3 else 1)
    return (tuple(size[:spatial]), np.asarray(reader.GetSpacing()[:spatial]), np.asarray(reader.GetOrigin()[:spatial]),
            direction, channels)


def _same_grid(a, b) -> bool:
    if a[0] != b[0]:
        return False
    scale = float(np.max(a[1]))
    return all(np.allclose(x, y, atol=GRID_TOLERANCE * max(scale, 1.0)) for x, y in zip(a[1:4], b[1:4], strict=True))


def _describe(grid) -> str:
    return f"shape {list(grid[0])}, spacing {[round(float(s), 3) for s in grid[1]]}"


def check_msd(root, option: str = "--data", min_cases: int = 3) -> MsdIndex:
    """Check an MSD folder without reading voxels; raise :class:`UserInputError` (one line) if malformed."""
    root = Path(root)
    manifest = _manifest(root, option)
    path = root / "dataset.json"
    classes = _classes(manifest, path)
    modality = manifest.get("modality")
    channels = len(modality) if isinstance(modality, dict) and modality else None
    for folder in ("imagesTr", "labelsTr"):
        if not (root / folder).is_dir():
            _fail(f"{root} has no {folder}/ folder; {LAYOUT} keeps training images in imagesTr/ and labels in "
                  "labelsTr/")
    cases, names = [], set()
    for entry in manifest["training"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) \
                or not isinstance(entry.get("label"), str):
            _fail(f"{path}: every 'training' entry needs 'image' and 'label' paths; entry {entry!r} does not")
        image, label = ((root / entry[key]).resolve() for key in ("image", "label"))
        name = image.name.split(".")[0]
        if not image.is_file():
            _fail(f"image {entry['image']} listed in {path.name} is missing from {root}; add the file or remove "
                  "the case from 'training'")
        if not label.is_file():
            _fail(f"label {entry['label']} of case {name} is missing from {root}; add the label file to labelsTr/ "
                  "or remove the case from 'training' in dataset.json")
        if name in names:
            _fail(f"{path}: case name {name} appears twice in 'training'; give each case its own file name")
        names.add(name)
        image_grid, label_grid = _header(image), _header(label)
        if label_grid[4] != 1:
            _fail(f"label {entry['label']} has {label_grid[4]} channels; a label map must be a single 3D volume")
        if channels is not None and image_grid[4] != channels:
            _fail(f"image {entry['image']} has {image_grid[4]} channel(s) but dataset.json's 'modality' declares "
                  f"{channels}; fix 'modality' or the image")
        channels = image_grid[4] if channels is None else channels
        if not _same_grid(image_grid, label_grid):
            _fail(f"case {name}: the label grid ({_describe(label_grid)}) does not match the image grid "
                  f"({_describe(image_grid)}); resample the label onto its image (e.g. in 3D Slicer) and save again")
        cases.append((name, image, label))
    if len(cases) < min_cases:
        _fail(f"{path} lists {len(cases)} labelled case(s); {option} needs at least {min_cases} (train, "
              "validation and test splits): add labelled cases to imagesTr/ and labelsTr/ and list them")
    return MsdIndex(root, str(manifest.get("name") or root.name), classes, int(channels or 1), cases)


def _nearest(labels: np.ndarray, sizes, steps) -> np.ndarray:
    """Labels at the positions MONAI ``Spacingd`` puts the new voxel centres (nearest old voxel).

    Hand-written rather than a second MONAI transform: the image went through the project's own
    :func:`..inference.preprocess.prepare` (the inference path), and the labels must land on exactly that grid
    (``prepared.resampled_shape`` and ``prepared.steps``), whatever MONAI's rounding of a new grid would be.
    """
    for axis, (size, step) in enumerate(zip(sizes, steps, strict=True)):
        index = np.clip(np.round(np.arange(size) * step), 0, labels.shape[axis] - 1).astype(np.int64)
        labels = np.take(labels, index, axis=axis)
    return labels


def load_case(name: str, image_path: Path, label_path: Path, classes, spacing: float | None) -> Case:
    """Read, re-orient to RAS, resample to ``spacing`` mm (None: keep) and normalise one case."""
    import torch

    from ..inference.io import read_volume
    from ..inference.preprocess import orient_tensor, prepare
    from ..inference.volume import spacing_of

    volume = read_volume(image_path)
    label_volume = read_volume(label_path)
    target = None if spacing is None else (float(spacing),) * 3
    prepared = prepare(volume, "RAS", target, INTENSITY)
    raw = np.rint(label_volume.data[0])
    allowed = {0, *(value for value, _ in classes)}
    found = {int(v) for v in np.unique(raw)}
    if found - allowed:
        _fail(f"label {label_path.name} holds values {sorted(found - allowed)} that dataset.json's 'labels' does "
              f"not declare ({sorted(allowed)}); add them to 'labels' or fix the label map")
    labels = orient_tensor(torch.from_numpy(raw.astype(np.uint8)), prepared.ornt).numpy()
    labels = _nearest(labels, prepared.resampled_shape, prepared.steps)
    voxel = tuple(float(s) for s in spacing_of(prepared.model_affine))
    image = prepared.tensor[0].numpy()
    return Case(name, np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(labels, np.uint8), voxel)


def msd_identity(index: MsdIndex, spacing: float | None, split_seed: int = 0, all_test: bool = False,
                 max_cases: int | None = None) -> dict:
    """What fixes a loaded MSD dataset (part of each trial's fingerprint)."""
    cases = index.cases[:max_cases] if max_cases else index.cases
    return {"source": "msd", "root": str(index.root), "name": index.name, "cases": [c[0] for c in cases],
            "spacing": spacing, "split_seed": split_seed, "all_test": all_test}


def load_msd(index: MsdIndex, spacing: float | None, split_seed: int = 0, all_test: bool = False,
             max_cases: int | None = None) -> Dataset:
    """Load an MSD dataset and split it (seeded 60/20/20), or use every case as test (``all_test``)."""
    cases = index.cases[:max_cases] if max_cases else index.cases
    loaded = []
    for name, image, label in cases:
        logger.info("reading %s", name)
        loaded.append(load_case(name, image, label, index.classes, spacing))
    identity = msd_identity(index, spacing, split_seed, all_test, max_cases)
    where = f"{index.name} ({index.root}, {len(loaded)} cases" + (f", resampled to {spacing:g} mm)" if spacing
                                                                   else ", native grids)")
    if all_test:
        return Dataset(index.name, f"{where}: every case is a test case", index.classes, index.channels,
                       test=loaded, identity=identity)
    train, validation, test = split_indices(len(loaded), seed=split_seed)
    description = (f"{where}: seeded split (seed {split_seed}) {len(train)} train / {len(validation)} validation / "
                   f"{len(test)} test")
    return Dataset(index.name, description, index.classes, index.channels,
                   train=[loaded[i] for i in train], validation=[loaded[i] for i in validation],
                   test=[loaded[i] for i in test], identity=identity)
