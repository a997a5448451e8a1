"""Threshold and click correction (core/refine.py, core/click_eval.py); `refine` and `eval-clicks`.

The threshold's speed is not asserted here (a timed test is flaky on a shared machine): see
``Testing/benchmarks/threshold_speed.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from HybridAttentionSegLib import cli
from HybridAttentionSegLib.core.correction import click_eval
from HybridAttentionSegLib.core.correction.refine import Click, apply_clicks, click_from_ras, threshold_segment
from HybridAttentionSegLib.core.errors import UserInputError
from HybridAttentionSegLib.core.inference.io import read_segmentation_nrrd, write_scalar_nrrd, write_segmentation_nrrd
from HybridAttentionSegLib.core.inference.volume import ijk_to_ras
from phantoms import LABELS, ball, make_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


def _remove_chunk(phantom, centre, radius_mm, value):
    """Labelmap and probabilities with a ball of ``value`` missing (the model 'did not see' it)."""
    chunk = ball(phantom.reference.shape, centre, radius_mm, phantom.spacing) & (phantom.labelmap == value)
    labelmap = phantom.labelmap.copy()
    labelmap[chunk] = 0
    probabilities = phantom.probabilities.copy()
    moved = 0.9 * probabilities[value][chunk]
    probabilities[value][chunk] -= moved
    probabilities[0][chunk] += moved
    return labelmap, probabilities, chunk


# ------------------------------------------------------------------------------------------------- threshold
def test_threshold_is_monotonic_and_leaves_other_segments(phantom):
    previous = None
    for threshold in (0.05, 0.2, 0.4, 0.6, 0.8, 0.95):
        out = threshold_segment(phantom.labelmap, phantom.probabilities, 2, threshold)
        mask = out == 2
        np.testing.assert_array_equal(out == 1, phantom.labelmap == 1)  # the other segment is untouched
        assert np.all(mask <= (phantom.probabilities[2] >= threshold))
        if previous is not None:
            assert np.all(mask <= previous), "a higher threshold must never add voxels"
            assert mask.sum() <= previous.sum()
        previous = mask
    assert previous.sum() < (phantom.labelmap == 2).sum()


def test_threshold_depends_only_on_the_last_value(phantom):
    once = threshold_segment(phantom.labelmap, phantom.probabilities, 1, 0.3)
    moved = threshold_segment(threshold_segment(phantom.labelmap, phantom.probabilities, 1, 0.9),
                              phantom.probabilities, 1, 0.3)
    np.testing.assert_array_equal(once, moved)
    # a single-channel probability gives the same answer as the channel of the full map
    np.testing.assert_array_equal(once, threshold_segment(phantom.labelmap, phantom.probabilities[1], 1, 0.3))


def test_threshold_rejects_a_probability_map_without_that_channel(phantom):
    with pytest.raises(UserInputError, match="no channel for label value 5"):
        threshold_segment(phantom.labelmap, phantom.probabilities, 5, 0.5)


# ------------------------------------------------------------------------------------------------- clicks
def test_click_inside_a_missing_chunk_restores_it(phantom):
    centre = (12, 24, 20)  # inside the shell
    labelmap, probabilities, chunk = _remove_chunk(phantom, centre, 6.0, 1)
    assert chunk.sum() > 200
    out = apply_clicks(phantom.image, labelmap, probabilities, [Click(centre, 1)], phantom.spacing)
    restored = (out == 1) & chunk
    assert restored.sum() >= 0.9 * chunk.sum()
    changed = out != labelmap
    assert np.count_nonzero(changed & ~chunk) <= 0.05 * chunk.sum()  # almost nothing outside the chunk
    assert np.all(out[labelmap == 2] == 2)  # the core it touches is not taken


def test_background_click_removes_a_false_blob_but_not_the_structure_it_touches(phantom):
    blob = ball(phantom.reference.shape, (3, 24, 20), 5.0, phantom.spacing) & (phantom.labelmap == 0)
    assert (ball(phantom.reference.shape, (3, 24, 20), 5.5, phantom.spacing) & (phantom.labelmap == 1)).any()
    labelmap = phantom.labelmap.copy()
    labelmap[blob] = 1
    probabilities = phantom.probabilities.copy()
    probabilities[:, blob] = 0.2 * probabilities[:, blob] + 0.8 * np.array([0, 1, 0], np.float32)[:, None]
    out = apply_clicks(phantom.image, labelmap, probabilities, [Click((3, 24, 20), 0)], phantom.spacing)
    assert np.count_nonzero(out[blob] == 1) <= 0.05 * blob.sum()
    np.testing.assert_array_equal(out[~blob], labelmap[~blob])  # the true shell stays


@pytest.mark.parametrize("value", [0, 1, 2])
def test_a_click_never_changes_voxels_far_from_it(phantom, value):
    radius = 8.0
    labelmap = np.zeros_like(phantom.labelmap) if value else phantom.labelmap.copy()
    centre = (24, 24, 20) if value != 1 else (12, 24, 20)
    out = apply_clicks(phantom.image, labelmap, phantom.probabilities, [Click(centre, value)],
                       phantom.spacing, radius_mm=radius, min_probability=0.0)
    changed = np.argwhere(out != labelmap)
    assert len(changed) > 10
    distance = np.sqrt((((changed - centre) * np.asarray(phantom.spacing)) ** 2).sum(axis=1))
    assert distance.max() <= radius + 1e-6


def test_clicks_replay_deterministically_and_do_not_modify_the_input(phantom):
    labelmap, probabilities, _ = _remove_chunk(phantom, (24, 24, 20), 6.0, 2)
    before = labelmap.copy()
    clicks = [Click((24, 24, 20), 2), ((3, 24, 20), 0), Click((12, 24, 20), 1)]
    first = apply_clicks(phantom.image, labelmap, probabilities, clicks, phantom.spacing)
    second = apply_clicks(phantom.image, labelmap, probabilities, clicks, phantom.spacing)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(labelmap, before)
    # dropping a click and replaying takes its effect back
    replayed = apply_clicks(phantom.image, labelmap, probabilities, [], phantom.spacing)
    np.testing.assert_array_equal(replayed, before)


def test_a_later_conflicting_click_keeps_what_an_earlier_click_set(phantom):
    labelmap, probabilities, chunk = _remove_chunk(phantom, (12, 24, 20), 6.0, 1)
    add = Click((12, 24, 20), 1)
    added = apply_clicks(phantom.image, labelmap, probabilities, [add], phantom.spacing)
    remove = Click((13, 24, 20), 0)  # right next to it, saying "background"
    both = apply_clicks(phantom.image, labelmap, probabilities, [add, remove], phantom.spacing)
    assert both[remove.ijk] == 0  # the clicked voxel itself follows the click
    differs = np.argwhere(both != added)
    assert [tuple(d) for d in differs] == [remove.ijk]


def test_a_click_outside_the_volume_is_a_clear_error(phantom):
    with pytest.raises(UserInputError, match="outside the volume"):
        apply_clicks(phantom.image, phantom.labelmap, phantom.probabilities, [Click((99, 0, 0), 1)])
    with pytest.raises(UserInputError, match="outside the image"):
        click_from_ras(phantom.affine, (500.0, 0.0, 0.0), 1, phantom.reference.shape)
    ras = ijk_to_ras(phantom.affine, [(3, 4, 5)])[0]
    assert click_from_ras(phantom.affine, ras + 0.2, 2, phantom.reference.shape) == Click((3, 4, 5), 2)


# ------------------------------------------------------------------------------------------------- protocol
def test_next_click_goes_deepest_into_the_largest_error(phantom):
    reference = np.zeros((30, 30, 30), np.uint8)
    labelmap = reference.copy()
    reference[5:15, 5:21, 5:15] = 1  # missed: 10 x 16 x 10 box, centre (9.5, 12.5, 9.5)
    labelmap[25:28, 25:28, 25:28] = 2  # a small false positive
    click = click_eval.next_click(labelmap, reference)
    assert click.value == 1
    assert abs(click.ijk[0] - 9.5) <= 0.5 and abs(click.ijk[2] - 9.5) <= 0.5 and 8 <= click.ijk[1] <= 16
    assert click_eval.next_click(reference, reference) is None


def test_no_click_lowers_dice_and_five_clicks_recover_most_of_it(phantom):
    clean = click_eval.mean_dice(phantom.labelmap, phantom.reference, [1, 2])
    for seed in (0, 1):
        broken = click_eval.add_synthetic_errors(phantom.labelmap, phantom.probabilities, [1, 2],
                                                 phantom.spacing, chunk_radius_mm=6.0, blob_radius_mm=5.0,
                                                 seed=seed)
        assert [r["kind"] for r in broken.regions] == ["missing chunk"] * 3 + ["false blob"]
        curve = click_eval.click_curve(phantom.image, broken.labelmap, broken.probabilities,
                                       phantom.reference, [1, 2], phantom.spacing, max_clicks=6)
        dice = [point.mean_dice for point in curve]
        assert dice[0] < clean - 0.03  # the errors cost something measurable
        assert all(b >= a for a, b in zip(dice, dice[1:], strict=False)), dice
        assert click_eval.recovered_fraction(curve, clean) >= 0.8, dice


def test_demo_data_curve_is_monotonic_and_recovers(phantom):
    from HybridAttentionSegLib.core.data import mni

    volume = mni.load_template(2)
    reference = mni.tissue_labels(2)
    gm, wm = mni.tissue_probabilities(2)
    probabilities = np.stack([np.clip(1 - gm - wm, 0, 1), gm, wm]).astype(np.float32)
    probabilities[:, ~mni.brain_mask(2)] = np.array([1, 0, 0], np.float32)[:, None]
    broken = click_eval.add_synthetic_errors(reference, probabilities, [1, 2], volume.spacing, seed=0)
    curve = click_eval.click_curve(volume.data[0], broken.labelmap, broken.probabilities, reference, [1, 2],
                                   volume.spacing, max_clicks=5)
    dice = [point.mean_dice for point in curve]
    assert all(b >= a for a, b in zip(dice, dice[1:], strict=False)), dice
    assert click_eval.recovered_fraction(curve, 1.0) >= 0.7, dice


# ------------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def cli_files(tmp_path, phantom):
    """Image, broken segmentation (missing chunk), probabilities and reference as files."""
    labelmap, probabilities, chunk = _remove_chunk(phantom, (12, 24, 20), 6.0, 1)
    files = {
        "image": write_scalar_nrrd(tmp_path / "image.nrrd", phantom.image, phantom.affine),
        "seg": write_segmentation_nrrd(tmp_path / "model.seg.nrrd", labelmap, phantom.affine, LABELS),
        "probabilities": write_scalar_nrrd(tmp_path / "model.probabilities.nrrd", probabilities,
                                           phantom.affine),
        "reference": write_segmentation_nrrd(tmp_path / "reference.seg.nrrd", phantom.reference,
                                             phantom.affine, LABELS),
    }
    return files, labelmap, chunk


def _main(monkeypatch, argv):
    # only this file's subcommands: the test does not depend on the other commands' modules
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("refine", "eval_clicks"))
    return cli.main([str(a) for a in argv])


def test_refine_command_writes_the_corrected_segmentation_on_the_same_grid(tmp_path, phantom, cli_files,
                                                                           monkeypatch, capsys):
    files, labelmap, chunk = cli_files
    r, a, s = ijk_to_ras(phantom.affine, [(12, 24, 20)])[0]
    out = tmp_path / "fixed.seg.nrrd"
    rc = _main(monkeypatch, ["refine", files["image"], "--seg", files["seg"], "--probabilities",
                             files["probabilities"], f"--click={r},{a},{s},shell", "--threshold", "Core=0.5",
                             "--out", out])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clicks"][0]["label"] == "Shell" and report["clicks"][0]["changed"] > 200
    fixed, affine, segments = read_segmentation_nrrd(out)
    original, original_affine, original_segments = read_segmentation_nrrd(files["seg"])
    np.testing.assert_allclose(affine, original_affine, atol=1e-6)
    assert fixed.shape == original.shape
    for kept, given in zip(segments, original_segments, strict=False):
        assert (kept["id"], kept["name"], kept["value"], kept["color"], kept["tags"]) == \
            (given["id"], given["name"], given["value"], given["color"], given["tags"])
    assert ((fixed == 1) & chunk).sum() >= 0.9 * chunk.sum()


@pytest.mark.parametrize("click, needle", [
    ("0,0,0,Liver", "unknown click label 'Liver'"),
    ("900,0,0,Shell", "outside the image"),
    ("1,2,Shell", "should be R,A,S,LABEL"),
])
def test_refine_command_bad_clicks_exit_2_and_write_nothing(tmp_path, cli_files, monkeypatch, capsys, click,
                                                            needle):
    files, _, _ = cli_files
    out = tmp_path / "never.seg.nrrd"
    rc = _main(monkeypatch, ["refine", files["image"], "--seg", files["seg"], f"--click={click}",
                             "--out", out])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and needle in err[-1] and err[-1].startswith("hybridseg: error:")
    assert not out.exists()


def test_eval_clicks_command_prints_the_curve(cli_files, monkeypatch, capsys):
    files, _, _ = cli_files
    rc = _main(monkeypatch, ["eval-clicks", files["image"], "--seg", files["seg"], "--probabilities",
                             files["probabilities"], "--reference", files["reference"], "--clicks", "3",
                             "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    dice = [point["mean_dice"] for point in report["mean_curve"]]
    assert len(dice) == 4 and dice[-1] > dice[0] and report["monotone"]
    assert report["runs"][0]["curve"][1]["click"]["label"] == "Shell"
    rc = _main(monkeypatch, ["eval-clicks", files["image"], "--seg", files["seg"], "--probabilities",
                             files["probabilities"], "--reference", files["reference"], "--clicks", "2"])
    table = capsys.readouterr().out
    assert rc == 0 and "mean Dice" in table and "Shell" in table and "Core" in table
