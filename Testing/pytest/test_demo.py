"""The demo job end to end on the 2 mm MNI152 template: files, geometry, pictures that really show overlays.

``test_demo_pipeline`` runs ``hybridseg demo`` with one small model (a card with seeded random weights in a
temporary catalog, so it does not depend on the trained models); ``test_demo_bundled_models`` (slow) runs the
real demo with every bundled model. Both check every file on the template grid and compare the PNGs with a
render of the T1 alone made in the test: inside the brain, the pictures must differ wherever the written
segmentation or attention map says there is something to show.
"""

from __future__ import annotations

import hashlib
import json

import nrrd  # noqa: E402
import numpy as np
import pytest
import torch  # noqa: E402
from HybridAttentionSegLib.cli import main  # noqa: E402
from HybridAttentionSegLib.core.data import mni  # noqa: E402
from HybridAttentionSegLib.core.inference.io import affine_from_nrrd_header  # noqa: E402
from HybridAttentionSegLib.core.models.cards import get_card  # noqa: E402
from HybridAttentionSegLib.core.models.offers import WITHHELD, natural_method, offered_methods, offers  # noqa: E402
from HybridAttentionSegLib.core.models.registry import get_architecture  # noqa: E402
from HybridAttentionSegLib.mrml import demo, demo_pictures, rendering  # noqa: E402
from PIL import Image  # noqa: E402

SIZE = 256
SMALL_ID = "test-demo-attention-unet"


@pytest.fixture
def small_card(tmp_path, monkeypatch):
    """A tiny Attention U-Net card with seeded random weights (safetensors next to the card).

    It works on a 4 mm grid (one sliding window), so the engine maps every output back to the 2 mm input grid.
    """
    from safetensors.torch import save_file

    monkeypatch.setenv("HYBRIDSEG_CACHE", str(tmp_path / "cache"))  # no user catalog from the machine
    spec = get_architecture("attention_unet")
    roi = [64, 64, 48]
    torch.manual_seed(0)
    model = spec.build(1, 3, tuple(roi), **spec.tiny_kwargs)
    folder = tmp_path / "catalog"
    folder.mkdir()
    weights = folder / f"{SMALL_ID}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    card = {
        "id": SMALL_ID, "title": "test demo model", "architecture": {"name": spec.name, "kwargs": spec.tiny_kwargs},
        "input": {"channels": 1}, "labels": [dict(label) for label in mni.TISSUE_LABELS],
        "preprocessing": {"orientation": "RAS", "spacing": [4.0, 4.0, 4.0],
                          "intensity": {"method": "zscore", "nonzero": True}},
        "inference": {"roi_size": roi, "overlap": 0.0},
        "weights": {"file": weights.name, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                    "format": "safetensors"},
        "license": "test", "intended_use": "tests only",
    }
    path = folder / f"{SMALL_ID}.json"
    path.write_text(json.dumps(card))
    return path


def _plain_render(headless_app, t1_path, orientation: str, size: int) -> np.ndarray:
    """The T1 alone, in the demo's view geometry."""
    background = headless_app.loadVolume(t1_path, "T1")
    view = rendering.OffscreenSliceView(headless_app.scene, headless_app.appLogic,
                                        rendering.SLICE_VIEW_NAMES[orientation], orientation, (size, size))
    try:
        view.setLayers(background=background)
        view.fitToBackground()
        view.jumpToRAS(demo_pictures.FOCUS_RAS)
        return view.capture()
    finally:
        view.close()


def _slice_through_focus(array: np.ndarray, affine: np.ndarray, orientation: str) -> np.ndarray:
    """The voxel plane of ``array`` (I, J, K) through the demo's focus point, for an axis-aligned RAS grid."""
    ijk = np.rint(np.linalg.solve(affine, [*demo_pictures.FOCUS_RAS, 1.0])[:3]).astype(int)
    axis = {"Sagittal": 0, "Coronal": 1, "Axial": 2}[orientation]
    return np.take(array, ijk[axis], axis=axis)


def _check_demo_output(out, headless_app, size: int, expected_models: list[str] | None = None,
                       catalog: list[str] | None = None) -> None:
    template = mni.load_template(2)
    summary = json.loads((out / "demo-summary.json").read_text())
    models = [entry["model"] for entry in summary["models"]]
    if expected_models is not None:
        assert models == expected_models
    t1_path = out / "MNI152_T1_2mm.nrrd"
    plain = {o: _plain_render(headless_app, t1_path, o, size) for o in demo_pictures.ORIENTATIONS}
    brain = {o: plain[o].astype(int).mean(axis=2) > 40 for o in demo_pictures.ORIENTATIONS}
    shown = 0
    for entry in summary["models"]:
        # the first own map the card ships for a class its grad-cam shares (the architecture's own map unless
        # withheld as not faithful), then grad-cam and uncertainty where the card ships them (core/models/offers.py)
        card = get_card(entry["model"], catalog)
        natural = natural_method(card)
        withheld = [m for m, offer in offers(card).items() if offer.status == WITHHELD]
        assert get_architecture(entry["architecture"]).natural_method in (natural, *withheld)
        own = [m for m in entry["methods"] if m not in demo.GENERIC_METHODS]
        assert own == entry["methods"][:len(own)] and len(own) <= 1
        assert set(own) <= set(offered_methods(card))
        assert set(entry["methods"]) - set(own) == {"grad-cam", "uncertainty"} & set(offered_methods(card))
        stem = entry["model"]
        files = sorted(out.glob(f"{stem}.*.nrrd"))
        expected = {f"{stem}.seg.nrrd", *(f"{stem}.attention-{m}.nrrd" for m in entry["methods"])}
        assert {f.name for f in files} == expected
        for path in files:  # every output on the input grid
            data, header = nrrd.read(str(path), index_order="F")
            assert data.shape == template.shape, path.name
            np.testing.assert_allclose(affine_from_nrrd_header(header), template.affine, atol=1e-5)
            if ".attention-" in path.name:
                assert data.dtype == np.float32 and data.min() >= 0.0 and data.max() <= 1.0
        assert json.loads((out / f"{stem}.json").read_text())["grid"]["shape"] == list(template.shape)
        if entry["dice"] is not None:
            assert set(entry["dice"]) == {"Gray matter", "White matter"}
            assert all(0.0 <= d <= 1.0 for d in entry["dice"].values())

        labelmap, _ = nrrd.read(str(out / f"{stem}.seg.nrrd"), index_order="F")
        for orientation in demo_pictures.ORIENTATIONS:
            o = orientation.lower()
            layers = {"segmentation": labelmap > 0}
            for method in entry["methods"]:
                heat, _ = nrrd.read(str(out / f"{stem}.attention-{method}.nrrd"), index_order="F")
                layers[method] = heat >= demo_pictures.HEAT_THRESHOLD
            seg_visible = _slice_through_focus(layers["segmentation"], template.affine, orientation).sum()
            for layer, present in layers.items():
                picture = np.asarray(Image.open(out / f"{stem}.{layer}.{o}.png").convert("RGB"))
                assert picture.shape == (size, size, 3)
                differs = np.abs(picture.astype(int) - plain[orientation].astype(int)).max(axis=2) > 12
                visible = _slice_through_focus(present, template.affine, orientation).sum()
                if seg_visible > 50 or visible > 50:  # heat pictures show the segmentation too
                    assert differs[brain[orientation]].sum() > 50, f"{stem}.{layer}.{o}.png shows no overlay"
                    shown += 1
                if layer != "segmentation" and visible > 50:
                    # the heat map adds to the segmentation picture where the map is above threshold
                    base = np.asarray(Image.open(out / f"{stem}.segmentation.{o}.png").convert("RGB"))
                    heat_differs = np.abs(picture.astype(int) - base.astype(int)).max(axis=2) > 12
                    assert heat_differs[brain[orientation]].sum() > 50, f"{stem}.{layer}.{o}.png: no heat map"
                    shown += 1
        three_d = np.asarray(Image.open(out / f"{stem}.3d.png").convert("RGB"))
        assert three_d.shape == (size, size, 3)
        if labelmap.any():
            assert (three_d.max(axis=2) > 30).mean() > 0.02, "the 3D view should show the segmentation surface"
    assert shown > 0
    montage = Image.open(out / "montage.png")
    assert montage.width > 3 * 200 and montage.height > len(models) * 200
    assert np.asarray(montage.convert("L")).std() > 10


def test_demo_pipeline(small_card, tmp_path, headless_app, capsys):
    out = tmp_path / "demo-output"
    code = main(["--catalog", str(small_card), "demo", "--out", str(out), "--model", SMALL_ID,
                 "--size", str(SIZE)])
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out.resolve()) in printed and "montage.png" in printed
    assert SMALL_ID in printed and "Dice Gray matter" in printed
    _check_demo_output(out, headless_app, SIZE, [SMALL_ID], [str(small_card)])


def test_demo_unknown_model_is_a_usage_error(small_card, tmp_path, capsys):
    code = main(["--catalog", str(small_card), "demo", "--out", str(tmp_path / "o"), "--model", "no-such-model"])
    assert code == 2
    assert "no-such-model" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_bundled_models(tmp_path, headless_app, monkeypatch):
    monkeypatch.setenv("HYBRIDSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HYBRIDSEG_CATALOG", raising=False)
    try:
        bundled = [card.id for card in demo.bundled_cards()]
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"no bundled models: {err}")
    out = tmp_path / "demo-output"
    assert main(["demo", "--out", str(out)]) == 0
    _check_demo_output(out, headless_app, demo_pictures.VIEW_SIZE, bundled)
    summary = json.loads((out / "demo-summary.json").read_text())
    for entry in summary["models"]:  # the trained tissue models segment the template well
        assert entry["dice"] is not None and min(entry["dice"].values()) > 0.5, entry
