"""The ``demo`` dataset: synthetic brain subjects (:mod:`..data.synth`) split by generator seed.

* **train**: ``TRAINING_SEEDS[:n_train]`` drawn with ``region="train"``: the anatomy of the held-out slab
  (RAS z >= 44 mm) is cut away before warping, so no training voxel comes from it;
* **validation**: ``VALIDATION_SEEDS[:n_validation]``, whole brain;
* **test**: ``VALIDATION_SEEDS[TEST_OFFSET:TEST_OFFSET + n_test]``, whole brain (the held-out slab's anatomy
  included). Validation and test seeds never overlap, and training never draws either range.

Labels: 1 grey matter, 2 white matter (0 background and CSF), as :func:`..data.mni.tissue_labels`. Subjects
are drawn on the 2 mm template grid; ``factor=2`` block-averages them to 4 mm (the tiny volumes of
``--quick``).
"""

from __future__ import annotations

import logging

import numpy as np

from ..data import mni
from ..inference.intensity import normalise_intensity
from .datasets import INTENSITY, Case, Dataset, downsample

logger = logging.getLogger(__name__)

#: first validation seed used for the test split (validation takes seeds below it)
TEST_OFFSET = 500
RESOLUTION_MM = 2


def _cases(seeds, region: str, factor: int, contrast: str) -> list[Case]:
    from ..data.synth import SyntheticSubjects

    subjects = SyntheticSubjects(seeds, region=region, contrast=contrast, resolution=RESOLUTION_MM)
    cases = []
    for seed in seeds:
        volume, labels, _ = subjects.subject(seed)
        image, _ = normalise_intensity(volume.data, INTENSITY)
        image, labels = downsample(image, labels, factor, 3)
        spacing = tuple(float(s) * factor for s in volume.spacing)
        cases.append(Case(f"subject-{seed}", image.astype(np.float32), labels.astype(np.uint8), spacing))
    return cases


def demo_dataset(n_train: int, n_validation: int, n_test: int, factor: int = 1, contrast: str = "t1") -> Dataset:
    """Draw the demo splits (see the module docstring); ``factor`` 1 keeps 2 mm voxels, 2 gives 4 mm."""
    from ..data.synth import TRAINING_SEEDS, VALIDATION_SEEDS

    if n_validation > TEST_OFFSET or n_test > len(VALIDATION_SEEDS) - TEST_OFFSET:
        raise ValueError(f"at most {TEST_OFFSET} validation and {len(VALIDATION_SEEDS) - TEST_OFFSET} test subjects")
    train = TRAINING_SEEDS[:n_train]
    validation = VALIDATION_SEEDS[:n_validation]
    test = VALIDATION_SEEDS[TEST_OFFSET:TEST_OFFSET + n_test]
    voxel = RESOLUTION_MM * factor
    description = (f"synthetic subjects (core.data.synth, contrast {contrast!r}, {voxel} mm voxels): "
                   f"train seeds {train.start}-{train.stop - 1} (held-out slab cut away), validation seeds "
                   f"{validation.start}-{validation.stop - 1}, test seeds {test.start}-{test.stop - 1} "
                   "(whole brain)")
    logger.info("drawing %d + %d + %d synthetic subjects", n_train, n_validation, n_test)
    return Dataset(
        name="demo", description=description,
        classes=[(label["value"], label["name"]) for label in mni.TISSUE_LABELS], channels=1,
        train=_cases(train, "train", factor, contrast), validation=_cases(validation, "all", factor, contrast),
        test=_cases(test, "all", factor, contrast),
        identity=demo_identity(n_train, n_validation, n_test, factor, contrast))


def demo_identity(n_train: int, n_validation: int, n_test: int, factor: int = 1, contrast: str = "t1") -> dict:
    """What fixes the demo splits (part of each trial's fingerprint), known before any subject is drawn."""
    return {"source": "demo", "train": n_train, "validation": n_validation, "test": n_test,
            "test_offset": TEST_OFFSET, "voxel_mm": RESOLUTION_MM * factor, "contrast": contrast}
