"""The slab-by-slab inverse (issue 14, CT memory): the labels and maps of the whole-volume inverse, exactly.

Reference: the whole-volume path that stays in the code (``Prepared.to_input_grid`` / ``to_oriented``, all
channels and rows at once, then ``decide`` / numpy re-orientation / ``engine.normalise_map``), on permuted and
flipped axes, anisotropic resampling, a foreground crop and sigmoid cards, with slabs of a few rows (so that
every slab boundary and the last, shorter slab are exercised).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from HybridAttentionSegLib.core.inference import inverse
from HybridAttentionSegLib.core.inference.engine import decide, normalise_map
from HybridAttentionSegLib.core.inference.preprocess import prepare
from HybridAttentionSegLib.core.inference.volume import Volume
from HybridAttentionSegLib.core.models.cards import ModelCard
from synthetic import card_dict


def _volume(affine) -> Volume:
    rng = np.random.default_rng(2)
    data = np.zeros((37, 29, 23), np.float32)
    data[5:30, 4:25, 3:20] = rng.uniform(0.5, 2.0, (25, 21, 17))
    return Volume(data, affine)


PERMUTED = np.array([[0, -1.6, 0, 5.0], [-1.8, 0, 0, -3.0], [0, 0, 2.4, 7.0], [0, 0, 0, 1]])
LPS = np.diag([-1.1, -0.9, 1.3, 1.0])
#: input axis K along x (the slabs then run along the first oriented axis), J along -z
K_FIRST = np.array([[0, 0, 1.3, 2.0], [1.1, 0, 0, -1.0], [0, -0.9, 0, 4.0], [0, 0, 0, 1]])


def _card(sigmoid: bool) -> ModelCard:
    data = card_dict(spacing=(2.0, 2.0, 2.0))
    if sigmoid:
        data["output"] = {"activation": "sigmoid", "channels": 3, "threshold": 0.5,
                          "regions": [{"channel": 0, "label": 1}, {"channel": 2, "label": 2}]}
    return ModelCard.from_dict(data)


@pytest.mark.parametrize("affine", [PERMUTED, LPS, K_FIRST], ids=["permuted", "lps", "k-first"])
@pytest.mark.parametrize("spacing", [(2.9, 2.1, 3.3), None], ids=["resampled", "native"])
@pytest.mark.parametrize("crop", [False, True], ids=["whole", "cropped"])
@pytest.mark.parametrize("sigmoid", [False, True], ids=["softmax", "sigmoid"])
def test_slab_inverse_is_the_whole_volume_inverse(monkeypatch, affine, spacing, crop, sigmoid):
    monkeypatch.setattr(inverse, "SLAB_ELEMENTS", 150)  # a few rows per slab
    card = _card(sigmoid)
    volume = _volume(affine)
    prepared = prepare(volume, "RAS", spacing, {"method": "none"}, crop_foreground=crop)
    shape = prepared.tensor.shape[2:]
    logits = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0)) * 3
    probabilities = torch.sigmoid(logits) if sigmoid else torch.softmax(logits, 0)
    expected = decide(card, prepared.to_input_grid(probabilities)).numpy()
    got = inverse.labels_on_input_grid(card, prepared, probabilities)
    assert got.shape == volume.shape and np.array_equal(got, expected)
    heat = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) ** 3
    whole = normalise_map(prepared.to_input_grid(heat[None])[0].numpy())
    lean = inverse.map_on_input_grid(prepared, heat)
    assert np.array_equal(lean, whole)
    assert got.flags.f_contiguous and lean.flags.f_contiguous  # the layout of the files they are written to


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_run_along_any_axis_is_that_part_of_the_whole_resample(axis):
    """``resample_run`` (the inverse's slabs) gives exactly the voxels of the whole resample, along every axis,
    upsampling and downsampling, for runs at the borders and inside."""
    from HybridAttentionSegLib.core.inference.resample import resample, resample_run

    t = torch.rand(2, 11, 9, 13, generator=torch.Generator().manual_seed(4))
    sizes, steps = (25, 9, 6), (0.42, 1.0, 2.3)
    whole = resample(t, sizes, steps)
    for start, stop in [(0, 1), (0, 4), (3, 5), (sizes[axis] - 2, sizes[axis])]:
        for layout in [(0, 1, 2), (2, 1, 0), (1, 2, 0)]:
            run = resample_run(t, sizes, steps, axis, start, stop, layout)
            assert torch.equal(run, whole.narrow(1 + axis, start, stop - start))
            sized = [a for a in layout if run.shape[1 + a] > 1]  # a length-1 axis has no meaningful stride
            strides = [run.stride()[1 + a] for a in sized]
            assert strides == sorted(strides, reverse=True)  # laid out as asked: copying it there is a straight copy


@pytest.mark.parametrize("affine", [PERMUTED, LPS, np.diag([1.2, 1.0, 0.8, 1.0])], ids=["permuted", "lps", "ras"])
@pytest.mark.parametrize("spacing", [(2.9, 2.1, 3.3), (1.0, 2.0, 2.4), None], ids=["resampled", "partly", "native"])
def test_prepare_folds_the_flips_into_the_resampling_exactly(affine, spacing):
    """The model-grid tensor equals the previous path: re-orient (torch flip + permute), then resample."""
    import nibabel.orientations as nio
    from HybridAttentionSegLib.core.inference.preprocess import orient_tensor
    from HybridAttentionSegLib.core.inference.resample import resample, spacing_grid
    from HybridAttentionSegLib.core.inference.volume import spacing_of

    volume = _volume(affine)
    volume = Volume(volume.data + np.random.default_rng(4).random(volume.data.shape, np.float32), volume.affine)
    prepared = prepare(volume, "RAS", spacing, {"method": "none"})
    ornt = nio.ornt_transform(nio.io_orientation(volume.affine), nio.axcodes2ornt(("R", "A", "S")))
    expected = orient_tensor(torch.from_numpy(volume.data.copy()), ornt)[None]
    if spacing is not None:
        oriented_affine = volume.affine @ nio.inv_ornt_aff(ornt, volume.shape)
        sizes, steps = spacing_grid(expected.shape[2:], spacing_of(oriented_affine), spacing)
        expected = resample(expected, sizes, steps)
    assert prepared.tensor.shape == expected.shape and torch.equal(prepared.tensor, expected)


def test_maps_are_zeroed_outside_the_body_and_renormalised():
    """``mask_outside`` (a multiplication by the mask since issue 14) gives what boolean indexing and
    ``engine.normalise_map`` give; an all-body mask leaves the map alone."""
    from HybridAttentionSegLib.core.explain.masking import mask_outside

    rng = np.random.default_rng(3)
    heat = normalise_map(rng.gamma(2.0, 1.0, (23, 19, 17)).astype(np.float32))
    body = rng.random(heat.shape) > 0.3
    expected = heat.copy()
    expected[~body] = 0.0
    expected = normalise_map(expected)
    got = mask_outside(heat.copy(), body)
    assert np.array_equal(got, expected) and not np.signbit(got).any()
    assert np.array_equal(mask_outside(heat.copy(), np.ones(heat.shape, bool)), heat)
