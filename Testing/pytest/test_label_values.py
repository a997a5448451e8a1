"""Label values that are not 1..n, listed out of order, end up where they belong (issue 10, item 12).

A two-class "model" whose answer is known voxel by voxel (core where the input > 0.7, ring where 0.3 < input
<= 0.7) and a card whose labels are 7 ("Core") then 3 ("Ring"): any code that writes a segment's position
instead of its value, or picks the smallest instead of the largest structure, gives a different answer. The
expected values come from the input array and the card, and the outputs are read back by SimpleITK (not by
our reader) and by Slicer's own segmentation import.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from HybridAttentionSegLib.core.inference.engine import Segmenter
from HybridAttentionSegLib.core.inference.results import write_result
from HybridAttentionSegLib.core.inference.volume import Volume
from HybridAttentionSegLib.core.models.cards import ModelCard
from synthetic import card_dict
from torch import nn

CORE, RING = 7, 3
LABELS = [  # deliberately not 1..n and not in value order
    {"value": CORE, "name": "Core", "color": [0.9, 0.2, 0.2]},
    {"value": RING, "name": "Ring", "color": [0.2, 0.4, 0.9]},
]


class CoreAndRingNet(nn.Module):
    """Softmax logits over max(value) + 1 = 8 channels: channel 7 where x > 0.7, channel 3 where 0.3 < x < 0.7."""

    def forward(self, x):
        x = x[:, :1]
        logits = torch.full((x.shape[0], 8, *x.shape[2:]), -10.0, dtype=x.dtype)
        logits[:, 0:1] = 0.0
        logits[:, CORE:CORE + 1] = 20.0 * (x - 0.7)
        logits[:, RING:RING + 1] = 20.0 * torch.minimum(x - 0.3, 0.7 - x)
        return logits


@pytest.fixture(scope="module")
def blob() -> Volume:
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in (36, 40, 32)], indexing="ij"))
    data = np.exp(-3 * (grid**2).sum(0)).astype(np.float32)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = (-20.0, 10.0, -5.0)
    return Volume(data, affine, name="blob")


def _expected(blob: Volume) -> dict[int, np.ndarray]:
    x = blob.data[0]
    return {CORE: x > 0.7, RING: (x > 0.3) & (x < 0.7)}


@pytest.fixture(scope="module")
def written(blob, tmp_path_factory):
    card = ModelCard.from_dict(card_dict("attention_unet", roi=(32, 32, 32), labels=LABELS, model_id="values"))
    result = Segmenter(card, device="cpu", model=CoreAndRingNet()).run(blob, attention=["uncertainty"])
    summary = write_result(result, tmp_path_factory.mktemp("out"), "blob", probabilities=True)
    summary.update(labels=card.labels, title=card.title, natural_method="uncertainty")
    return result, summary


def test_default_explained_class_is_the_largest_structure(blob, written):
    result, summary = written
    expected = _expected(blob)
    largest = max(expected, key=lambda value: int(expected[value].sum()))
    assert expected[RING].sum() > 2 * expected[CORE].sum()  # the phantom makes the choice unambiguous
    assert result.target_class == largest == RING
    on_disk = json.loads(open(summary["files"]["summary"], encoding="utf-8").read())
    assert on_disk["target_class"] == "Ring"


def test_segment_label_values_read_back_by_simpleitk(blob, written):
    _, summary = written
    image = sitk.ReadImage(summary["files"]["segmentation"])
    labels = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    keys = set(image.GetMetaDataKeys())
    segments = {}
    index = 0
    while f"Segment{index}_Name" in keys:
        segments[image.GetMetaData(f"Segment{index}_Name")] = int(image.GetMetaData(f"Segment{index}_LabelValue"))
        index += 1
    assert segments == {label["name"]: label["value"] for label in LABELS}
    for value, mask in _expected(blob).items():
        np.testing.assert_array_equal(labels == value, mask, err_msg=f"label value {value}")
    assert set(np.unique(labels)) == {0, CORE, RING}


def test_probability_channels_follow_label_values(blob, written):
    _, summary = written
    image = sitk.ReadImage(summary["files"]["probabilities"])  # (C, I, J, K) written as a vector NRRD
    probabilities = sitk.GetArrayFromImage(image)  # (K, J, I, C)
    assert probabilities.shape[-1] == 8
    argmax = probabilities.argmax(-1).transpose(2, 1, 0)
    for value, mask in _expected(blob).items():
        assert (argmax[mask] == value).all(), f"channel {value} is not the most probable in its own segment"


def test_slicer_import_puts_each_label_value_into_its_own_segment(headless_app, blob, written, tmp_path):
    import nibabel as nib
    import slicer
    from HybridAttentionSegLib.mrml import outputs, transaction

    path = tmp_path / "blob.nii.gz"
    nib.save(nib.Nifti1Image(blob.data[0], blob.affine), str(path))
    volume = headless_app.loadVolume(path, "blob")
    _, summary = written
    result = transaction.importResult(volume, summary)
    segmentation = result.segmentationNode.GetSegmentation()
    for label in LABELS:
        identifier = outputs.segmentId("values", label["value"])
        assert segmentation.GetSegment(identifier).GetName() == label["name"]
        voxels = slicer.util.arrayFromSegmentBinaryLabelmap(result.segmentationNode, identifier, volume)
        expected = _expected(blob)[label["value"]].transpose(2, 1, 0)  # (I, J, K) -> Slicer's (K, J, I)
        np.testing.assert_array_equal(voxels.astype(bool), expected, err_msg=label["name"])
