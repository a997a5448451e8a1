"""Intensity normalisation: hand-computed cases for every method, and robustness (issue 10, item 4).

Expected values are written out by hand or computed with plain numpy in the test from the textbook formula,
never with the code under test. The robustness checks run the bundled demo model on the MNI152 template:
near-zero and noisy backgrounds, and global scale factors from 1e-30 to 1e30, must give the labels of the
clean volume (>= 99.5 % of voxels).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from HybridAttentionSegLib.core.data import mni
from HybridAttentionSegLib.core.inference.engine import Segmenter
from HybridAttentionSegLib.core.inference.intensity import foreground, label_map_reason, normalise_intensity
from HybridAttentionSegLib.core.inference.volume import Volume
from HybridAttentionSegLib.core.models.cards import get_card


def _one(values, **intensity) -> np.ndarray:
    data = np.asarray(values, dtype=np.float32).reshape(1, -1, 1, 1)
    return normalise_intensity(data, intensity)[0].ravel()


def test_window_scales_and_clips():
    hu = [-1000.0, -175.0, 37.5, 250.0, 400.0]
    # (x + 175) / 425, clipped to [0, 1]: worked out by hand
    assert _one(hu, method="window", window=[-175, 250]) == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0], abs=1e-7)
    # output range [-1, 1] without clipping: 2 * (x + 175) / 425 - 1
    unclipped = _one(hu, method="window", window=[-175, 250], range=[-1, 1], clip=False)
    assert unclipped == pytest.approx([-1650 / 425 - 1, -1.0, 0.0, 1.0, 1150 / 425 - 1], abs=1e-6)
    clipped = _one(hu, method="window", window=[-175, 250], range=[-1, 1], clip=True)
    assert clipped == pytest.approx([-1.0, -1.0, 0.0, 1.0, 1.0], abs=1e-7)


def test_zscore_nonzero_and_all_voxels():
    values = [0.0, 0.0, 2.0, 4.0, 6.0]
    # foreground 2, 4, 6: mean 4, population std sqrt(8/3); background stays 0
    s = np.sqrt(8.0 / 3.0)
    assert _one(values, method="zscore", nonzero=True) == pytest.approx([0, 0, -2 / s, 0, 2 / s], abs=1e-6)
    # all voxels: mean 2.4, std sqrt(mean((x - 2.4)^2))
    x = np.asarray(values)
    expected = (x - x.mean()) / np.sqrt(((x - x.mean()) ** 2).mean())
    assert _one(values, method="zscore", nonzero=False) == pytest.approx(expected, abs=1e-6)


def test_zscore_per_channel_or_joint():
    data = np.zeros((2, 4, 1, 1), np.float32)
    data[0, :, 0, 0] = [1, 2, 3, 4]
    data[1, :, 0, 0] = [10, 20, 30, 40]
    per = normalise_intensity(data, {"method": "zscore", "channel_wise": True})[0]
    unit = (np.arange(1, 5) - 2.5) / np.sqrt(1.25)  # both channels: the same standardised ramp
    assert per[0].ravel() == pytest.approx(unit, abs=1e-6) and per[1].ravel() == pytest.approx(unit, abs=1e-6)
    joint = normalise_intensity(data, {"method": "zscore", "channel_wise": False})[0]
    both = np.concatenate([data[0].ravel(), data[1].ravel()]).astype(np.float64)
    expected = (both - both.mean()) / both.std()
    assert np.concatenate([joint[0].ravel(), joint[1].ravel()]) == pytest.approx(expected, abs=1e-6)


def test_percentile_per_channel():
    data = np.stack([np.arange(101.0), 1000.0 + 2 * np.arange(101.0)]).reshape(2, 101, 1, 1)
    out = normalise_intensity(data, {"method": "percentile", "percentiles": [10, 90]})[0]
    # channel 0: p10 = 10, p90 = 90; channel 1: p10 = 1020, p90 = 1180; clipped to [0, 1]
    assert out[0].ravel() == pytest.approx(np.clip((np.arange(101) - 10) / 80, 0, 1), abs=1e-6)
    assert out[1].ravel() == pytest.approx(np.clip((2 * np.arange(101) - 20) / 160, 0, 1), abs=1e-6)


def test_constant_input_is_flagged_not_divided_by_zero():
    out, constant = normalise_intensity(np.full((1, 4, 4, 4), 7.0, np.float32), {"method": "zscore"})
    assert constant and np.all(out == 0)


def _phantom(background: np.ndarray | float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    tissue = np.zeros((40, 40, 40), np.float32)
    tissue[8:32, 8:32, 8:32] = rng.uniform(100, 900, (24, 24, 24))
    return np.where(tissue > 0, tissue, background).astype(np.float32)[None]


def test_foreground_ignores_near_zero_and_noisy_backgrounds():
    clean = _phantom()[0] != 0
    assert np.array_equal(foreground(_phantom()[0]), clean)  # MONAI's x != 0 on a clean background
    assert np.array_equal(foreground(_phantom(1e-17)[0]), clean)  # what a resampling leaves
    rng = np.random.default_rng(1)  # MR magnitude background: Rayleigh noise, sigma 1 % and 3 % of the tissue
    for sigma in (5.0, 15.0):
        noise = sigma * np.hypot(rng.normal(0, 1, (40, 40, 40)), rng.normal(0, 1, (40, 40, 40)))
        assert (foreground(_phantom(noise)[0]) == clean).mean() > 0.999
    blobs = np.exp(-np.linspace(0, 15, 40) ** 2 / 20.0)[:, None, None] * np.ones((40, 40, 40))  # down to 1e-5
    assert foreground(blobs).mean() > 0.9  # smooth dark tails are image content, not noise


def test_prepare_keeps_the_foreground_the_body_mask_would_compute():
    """The maps' body mask reuses the z-score's foreground from preprocessing (issue 14): the same mask as
    ``body_mask`` computes from the input, channels OR-ed; none unless asked, none when it was not computed."""
    from HybridAttentionSegLib.core.explain.masking import body_mask
    from HybridAttentionSegLib.core.inference.preprocess import prepare

    rng = np.random.default_rng(2)
    noise = 15.0 * np.hypot(rng.normal(0, 1, (40, 40, 40)), rng.normal(0, 1, (40, 40, 40)))
    second = np.roll(_phantom(noise)[0], 5, axis=0)  # a second channel whose foreground differs
    data = np.concatenate([_phantom(1e-17), second[None]]).astype(np.float32)
    volume = Volume(data, np.diag([2.0, -1.5, 1.0, 1.0]))
    zscore = {"method": "zscore", "nonzero": True}
    kept = prepare(volume, "RAS", (2.0, 2.0, 2.0), zscore, keep_foreground=True).foreground
    expected = body_mask(data, zscore)
    assert kept is not None and kept.any() and not kept.all()
    assert np.array_equal(kept, expected)
    assert np.array_equal(body_mask(data, zscore, foreground=kept), expected)
    assert prepare(volume, "RAS", (2.0, 2.0, 2.0), zscore).foreground is None
    assert prepare(volume, "RAS", (2.0, 2.0, 2.0), zscore, order="resample-first",
                   keep_foreground=True).foreground is None
    window = {"method": "window", "window": [0, 500]}
    assert prepare(volume, "RAS", None, window, keep_foreground=True).foreground is None


@pytest.mark.parametrize("factor", [1e-30, 1e-10, 1e10, 1e30])
def test_zscore_is_scale_free(factor):
    base = normalise_intensity(_phantom(), {"method": "zscore", "nonzero": True})[0]
    scaled = normalise_intensity(_phantom() * np.float32(factor), {"method": "zscore", "nonzero": True})[0]
    assert np.isfinite(scaled).all()
    assert np.abs(scaled - base).max() < 1e-5


def test_label_maps_are_recognised():
    mask = np.zeros((1, 20, 20, 20), np.float32)
    mask[0, 5:15, 5:15, 5:15] = 1
    assert "2 distinct integer" in label_map_reason(mask)
    labels = np.random.default_rng(0).integers(0, 14, (1, 20, 20, 20)).astype(np.int16)
    assert label_map_reason(labels) is not None
    ct = np.random.default_rng(0).integers(-1000, 1500, (1, 20, 20, 20)).astype(np.int16)
    assert label_map_reason(ct) is None
    assert label_map_reason(mni.load_template(2).data) is None


@pytest.fixture(scope="module")
def demo():
    torch.set_num_threads(1)
    card = get_card("mni-tissue-attention-unet")
    volume = mni.load_template(2)
    segmenter = Segmenter(card, device="cpu", fast_path="off")
    return segmenter, volume, segmenter.run(volume).labelmap


def _variant(volume: Volume, data: np.ndarray) -> Volume:
    return Volume(data.astype(np.float32), volume.affine.copy(), volume.name)


@pytest.mark.parametrize("variant", ["near-zero background", "noisy background", "x1e-30", "x1e30"])
def test_demo_labels_survive_background_and_scale(demo, variant):
    segmenter, volume, clean = demo
    data = volume.data.astype(np.float64)
    background = data == 0
    if variant == "near-zero background":
        data = np.where(background, 1e-17 * (1 + np.random.default_rng(0).random(data.shape)), data)
    elif variant == "noisy background":  # Rayleigh magnitude noise (MR background), sigma 2 % of the range
        rng = np.random.default_rng(0)
        noise = 0.02 * data.max() * np.hypot(rng.normal(0, 1, data.shape), rng.normal(0, 1, data.shape))
        data = np.where(background, noise, data)
    else:
        data = data * float(variant[1:])
    labels = segmenter.run(_variant(volume, data)).labelmap
    agreement = (labels == clean).mean()
    assert agreement >= 0.995, f"{variant}: labels agree on {agreement:.4%} of voxels"


def _nifti(path, data):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    return path


def test_cli_refuses_a_mask_unless_forced(tmp_path, capsys):
    from HybridAttentionSegLib.cli import main

    mask = np.zeros((40, 40, 40), np.float32)
    mask[10:30, 10:30, 10:30] = 1.0
    path = _nifti(tmp_path / "mask.nii.gz", mask)
    args = ["segment", str(path), "--model", "mni-tissue-attention-unet", "--out", str(tmp_path / "out"),
            "--attention", "none", "--device", "cpu", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "label map or mask" in err and "--force" in err
    assert not (tmp_path / "out" / "mask.seg.nrrd").exists()
    assert main([*args, "--force"]) == 0
    assert (tmp_path / "out" / "mask.seg.nrrd").exists()
