"""Synthetic subjects (``core.data.synth``): labels as the template's rule gives them, seeds, regions, backgrounds.

Expected labels come from :func:`core.data.mni.tissue_labels` (the template's own rule, separate code), not from
the generator; everything else is checked against properties the module docstring promises.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from HybridAttentionSegLib.core.data import mni  # noqa: E402
from HybridAttentionSegLib.core.data.synth import (  # noqa: E402
    TRAINING_SEEDS,
    VALIDATION_SEEDS,
    Ranges,
    SyntheticSubjects,
)

#: no warp at all: the labels must be the template's
STILL = Ranges(rotation_deg=0.0, scale=0.0, translation_mm=0.0, deform_mm=0.0)


def test_identity_draw_reproduces_the_template_labels():
    image, labels, affine = SyntheticSubjects(range(3), ranges=STILL).subject(1)
    reference = mni.tissue_labels(2)
    assert labels.dtype == np.uint8 and labels.shape == reference.shape
    assert np.mean(labels == reference) > 0.9995  # float rounding of the sampling grid only (ties of the argmax)
    np.testing.assert_array_equal(affine, mni.load_template(2).affine)
    assert image.data.shape == (1, *reference.shape) and image.data.dtype == np.float32


def test_default_draws_warp_the_anatomy_and_keep_t1_ordering():
    reference = mni.tissue_labels(2)
    for image, labels, _ in SyntheticSubjects(VALIDATION_SEEDS[:3]):
        agreement = np.mean(labels[reference > 0] == reference[reference > 0])
        assert agreement < 0.9, "the subject is not warped"
        counts = np.bincount(labels.ravel(), minlength=3)
        ratio = counts[1:] / np.bincount(reference.ravel(), minlength=3)[1:]
        assert np.all((ratio > 0.5) & (ratio < 1.8)), ratio  # scale +-15 % per axis at most
        data = image.data[0]
        assert np.median(data[labels == 2]) > np.median(data[labels == 1])  # white brighter than grey


def test_same_seed_same_subject_and_seeds_are_checked():
    generator = SyntheticSubjects(TRAINING_SEEDS)
    first, labels_a, _ = generator.subject(42)
    second, labels_b, _ = generator.subject(42)
    other, labels_c, _ = generator.subject(43)
    np.testing.assert_array_equal(first.data, second.data)
    np.testing.assert_array_equal(labels_a, labels_b)
    assert not np.array_equal(labels_a, labels_c)
    assert first.meta["synthetic"]["seed"] == 42 and first.meta["synthetic"] != other.meta["synthetic"]
    with pytest.raises(ValueError, match="not one of this generator's seeds"):
        generator.subject(VALIDATION_SEEDS[0])
    assert not set(TRAINING_SEEDS[-5:]) & set(VALIDATION_SEEDS) and TRAINING_SEEDS.stop <= VALIDATION_SEEDS.start


def test_training_region_never_holds_the_heldout_slab():
    first = mni.heldout_first_slice(2)
    _, labels, _ = SyntheticSubjects(range(2), region="train", ranges=STILL).subject(0)
    reference = mni.tissue_labels(2)
    assert not labels[:, :, first:].any()
    assert np.mean(labels[:, :, : first - 2] == reference[:, :, : first - 2]) > 0.9995
    # warped training subjects hold less tissue than whole-brain ones (the slab has 16-17 % of it); the warp
    # is centred on the (cut) source brain, so the two are not voxel-aligned
    for seed in range(3):
        _, cut, _ = SyntheticSubjects(range(5), region="train").subject(seed)
        _, whole, _ = SyntheticSubjects(range(5)).subject(seed)
        assert 0.7 * (whole > 0).sum() < (cut > 0).sum() < 0.95 * (whole > 0).sum()


def test_backgrounds_change_only_the_outside():
    generator = SyntheticSubjects(VALIDATION_SEEDS[:2])
    seed = VALIDATION_SEEDS[1]
    zero, labels, _ = generator.subject(seed, background="zero")
    near, _, _ = generator.subject(seed, background="near-zero")
    noise, _, _ = generator.subject(seed, background="noise")
    brain = zero.data[0] != 0
    assert brain[labels > 0].all()
    outside = ~brain
    for other in (near, noise):
        np.testing.assert_array_equal(other.data[0][brain], zero.data[0][brain])
    assert np.all(near.data[0][outside] < 1e-16) and np.count_nonzero(near.data[0][outside]) > 0.9 * outside.sum()
    level = np.median(zero.data[0][labels == 2])
    assert 0.001 * level < np.median(noise.data[0][outside]) < 0.1 * level
    kinds = {SyntheticSubjects(VALIDATION_SEEDS).subject(s)[0].meta["synthetic"]["background"]
             for s in VALIDATION_SEEDS[:12]}
    assert kinds == {"zero", "near-zero", "noise"}


def test_contrast_agnostic_draws_any_order():
    orders = set()
    for seed in range(8):
        means = SyntheticSubjects(range(8), contrast="any").subject(seed)[0].meta["synthetic"]["tissue_means"]
        orders.add(tuple(sorted(means, key=means.get)))
    assert len(orders) > 2
    with pytest.raises(ValueError, match="contrast"):
        SyntheticSubjects(range(2), contrast="t2")


def test_fast_enough_for_on_the_fly_training():
    generator = SyntheticSubjects(TRAINING_SEEDS, region="train")
    generator.subject(0)  # source maps are cached after the first subject
    t0 = time.perf_counter()
    generator.subject(1)
    # one training step of the bundled models takes 0.5-2 s on one core; the generator must not dominate
    # (measured ~0.35 s on an idle core; generous for a shared machine)
    assert time.perf_counter() - t0 < 5.0


def test_mixed_batches_are_reproducible_and_draw_from_both_sources():
    """``--data mixed``: one seed, the same steps; template patches and synthetic subjects both appear."""
    from HybridAttentionSegLib.core.data.sampling import MixedBatches

    intensity = {"method": "zscore", "nonzero": True}
    runs = []
    for _ in range(2):
        batches = MixedBatches((32, 32, 24), intensity, seed=7)
        sources = []
        steps = []
        for _ in range(3):  # seed 7 draws template, synthetic, synthetic
            before = (batches.template.rng.bit_generator.state["state"]["state"],
                      batches.synthetic.rng.bit_generator.state["state"]["state"])
            image, label = batches.batch(2)
            after = (batches.template.rng.bit_generator.state["state"]["state"],
                     batches.synthetic.rng.bit_generator.state["state"]["state"])
            sources.append("template" if before[0] != after[0] else "synthetic")
            assert (before[0] != after[0]) != (before[1] != after[1])  # exactly one source drew
            assert image.shape == (2, 1, 32, 32, 24) and label.shape == (2, 1, 32, 32, 24)
            steps.append((image.numpy(), label.numpy()))
        runs.append((sources, steps))
    assert runs[0][0] == runs[1][0] and set(runs[0][0]) == {"template", "synthetic"}, runs[0][0]
    for (a, b), (c, d) in zip(runs[0][1], runs[1][1], strict=True):
        assert np.array_equal(a, c) and np.array_equal(b, d)
