"""MONAI bundle import honours the bundle's transforms (or refuses with one line) — issue 9, item 4.

Real bundle folders on disk are read by ``read_bundle`` (as data: nothing is evaluated); the expected card
values are written out from the bundle texts by hand.
"""

from __future__ import annotations

import json

import pytest
import torch
from HybridAttentionSegLib.core.errors import UserInputError
from HybridAttentionSegLib.core.inference.engine import decide
from HybridAttentionSegLib.core.models.cards import ModelCard
from HybridAttentionSegLib.core.weights.bundle import read_bundle

#: model-zoo brats_mri_segmentation 0.5.x post-processing label painting (configs/inference.json)
BRATS_LAMBDA = "$lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, torch.where(x[[1]] > 0, 2, 0)))"


def _bundle(tmp_path, preprocessing=None, inferer=None, postprocessing=None, monai_version="1.4.0",
            network=None, channel_def=None):
    network = network or {"_target_": "SwinUNETR", "spatial_dims": 3, "img_size": 96, "in_channels": 1,
                          "out_channels": 3, "feature_size": 12}
    config = {
        "network_def": network,
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing or [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -175, "a_max": 250, "b_min": 0.0,
             "b_max": 1.0, "clip": True},
        ]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96], "sw_batch_size": 1,
                    "overlap": 0.5, **(inferer or {})},
        "postprocessing": {"_target_": "Compose", "transforms": postprocessing or [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True}]},
    }
    metadata = {"name": "bundle under test", "network_data_format": {"outputs": {"pred": {
        "channel_def": channel_def or {"0": "background", "1": "spleen", "2": "liver"}}}}}
    if monai_version is not None:
        metadata["monai_version"] = monai_version
    root = tmp_path / "bundle"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata))
    (root / "models" / "model.pt").write_bytes(b"not parsed by read_bundle")
    return root


def _window(**options):
    return [{"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -100, "a_max": 300, **options}]


def test_scale_intensity_range_options_are_carried(tmp_path):
    bundle = read_bundle(_bundle(tmp_path, preprocessing=_window(b_min=-1.0, b_max=1.0, clip=False)))
    assert bundle.draft["preprocessing"]["intensity"] == {"method": "window", "window": [-100.0, 300.0],
                                                          "range": [-1.0, 1.0], "clip": False}


def test_normalize_intensity_options_are_carried_or_refused(tmp_path):
    zscore = [{"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True}]
    bundle = read_bundle(_bundle(tmp_path / "a", preprocessing=zscore))
    assert bundle.draft["preprocessing"]["intensity"] == {"method": "zscore", "nonzero": True,
                                                          "channel_wise": True}
    default = read_bundle(_bundle(tmp_path / "b", preprocessing=[{"_target_": "NormalizeIntensityd",
                                                                    "keys": "image"}]))
    assert default.draft["preprocessing"]["intensity"]["channel_wise"] is False  # MONAI's default
    fixed = [{"_target_": "NormalizeIntensityd", "keys": "image", "subtrahend": 100, "divisor": 50}]
    with pytest.raises(UserInputError, match=r"NormalizeIntensityd option subtrahend=100 cannot be honoured"):
        read_bundle(_bundle(tmp_path / "c", preprocessing=fixed))


def test_unsupported_intensity_transform_is_refused_in_one_line(tmp_path):
    other = [{"_target_": "ScaleIntensityd", "keys": "image", "minv": 0.0, "maxv": 1.0}]
    with pytest.raises(UserInputError, match=r"uses ScaleIntensityd, which hybridseg cannot reproduce") as err:
        read_bundle(_bundle(tmp_path, preprocessing=other))
    assert "\n" not in str(err.value)


def test_order_and_blend_follow_the_bundle(tmp_path):
    first = [*_window(b_min=0.0, b_max=1.0, clip=True),
             {"_target_": "Spacingd", "keys": "image", "pixdim": [1.0, 1.0, 1.0]}]
    bundle = read_bundle(_bundle(tmp_path / "a", preprocessing=first, inferer={"mode": "gaussian"}))
    assert bundle.draft["preprocessing"]["order"] == "intensity-first"
    assert bundle.draft["inference"]["blend"] == "gaussian"
    default = read_bundle(_bundle(tmp_path / "b"))
    assert default.draft["preprocessing"]["order"] == "resample-first"
    assert default.draft["inference"]["blend"] == "constant"  # SlidingWindowInferer's default mode
    with pytest.raises(UserInputError, match="sigma_scale"):
        read_bundle(_bundle(tmp_path / "c", inferer={"mode": "gaussian", "sigma_scale": 0.25}))


@pytest.mark.parametrize(("version", "legacy"), [("1.4.0", True), ("0.9.1", True), ("1.5.0", False)])
def test_swin_merging_follows_the_bundles_monai_version(tmp_path, version, legacy):
    bundle = read_bundle(_bundle(tmp_path, monai_version=version))
    kwargs = bundle.draft["architecture"]["kwargs"]
    assert (kwargs.get("downsample") == "merging-legacy") is legacy
    assert any("merging-legacy" in note for note in bundle.notes) is legacy


def test_missing_monai_version_keeps_current_merging_with_a_notice(tmp_path):
    bundle = read_bundle(_bundle(tmp_path, monai_version=None))
    assert "downsample" not in bundle.draft["architecture"]["kwargs"]
    assert any("states no monai_version" in note for note in bundle.notes)


def _brats_post(func=BRATS_LAMBDA):
    return [{"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
            {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
            {"_target_": "Lambdad", "keys": "pred", "func": func}]


def test_sigmoid_regions_are_painted_in_the_bundles_order(tmp_path):
    channels = {"0": "Tumor core", "1": "Whole tumor", "2": "Enhancing tumor"}
    bundle = read_bundle(_bundle(tmp_path, postprocessing=_brats_post(), channel_def=channels))
    output = bundle.draft["output"]
    # torch.where's first condition wins, so it is painted last: WT (2), then TC (1), then ET (4)
    assert output["regions"] == [{"channel": 1, "label": 2}, {"channel": 0, "label": 1},
                                 {"channel": 2, "label": 4}]
    assert output["threshold"] == 0.5
    names = {label["value"]: label["name"] for label in bundle.draft["labels"]}
    assert names == {1: "Tumor core", 2: "Whole tumor", 4: "Enhancing tumor"}
    card = ModelCard.from_dict({**bundle.draft, "id": "b", "weights": {"url": "http://127.0.0.1/x",
                                                                      "sha256": None}})
    # nested regions as BraTS has them: ET inside TC inside WT, one voxel each plus background
    p = torch.tensor([[0.9, 0.9, 0.1, 0.1],   # TC
                      [0.9, 0.9, 0.9, 0.1],   # WT
                      [0.9, 0.1, 0.1, 0.1]])  # ET
    assert decide(card, p.reshape(3, 4, 1, 1)).ravel().tolist() == [4, 1, 2, 0]  # what the bundle's lambda gives


def test_label_painting_code_is_never_evaluated(tmp_path):
    marker = tmp_path / "evaluated"
    evil = f"$lambda x: __import__('os').system('touch {marker}')"
    with pytest.raises(UserInputError, match="not a label painting hybridseg can read"):
        read_bundle(_bundle(tmp_path, postprocessing=_brats_post(evil)))
    assert not marker.exists()
