"""Catalog models compute what upstream computed, checked against the MONAI releases that wrote the checkpoints.

The expected values come from ``Testing/golden`` (``make_golden.py`` ran MONAI 1.4.0, 0.7.0 and 0.9.0 on
seeded weights and synthetic volumes); here they are compared with our own loader and pipeline:

* real-size key/shape manifests: our network for each catalog card loads the upstream layout strictly, and
  exactly the unused MONAI <= 0.8 residual projections are dropped (with a notice);
* ``other-grid`` volumes (another orientation and spacing): probabilities within 1e-4 and identical labels,
  except at voxels upstream itself decided by less than 1e-4 (recorded by the old release; a probability
  change within the tolerance may flip those; the measured counts are printed and are 0 or 1);
* the issue's "Done means": the checkpoint file in the upstream layout (byte-identical to the old release's,
  where torch matches) served by a real HTTP server on 127.0.0.1, fetched by ``hybridseg download``, then
  ``hybridseg segment --probabilities`` on the ``card-grid`` volume (already at the card's orientation and
  spacing): probabilities within 1e-4 (the issue asks 1e-3) and the same labels (same near-tie rule), read
  back with pynrrd.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys

import nibabel as nib
import nrrd
import numpy as np
import pytest
import torch
from golden_cases import (
    BRATS_MEMBER,
    CARDS,
    card_for_test,
    catalog_card,
    checkpoint,
    compare,
    input_volume,
    manifest,
    record,
    same_bytes_expected,
    sha256,
)
from helpers_weights import http_server
from HybridAttentionSegLib.core.inference.engine import Segmenter, build_model
from HybridAttentionSegLib.core.inference.volume import Volume
from HybridAttentionSegLib.core.models.cards import ModelCard
from HybridAttentionSegLib.core.weights.layouts import load_weights_into

logger = logging.getLogger(__name__)
#: the issue's limits: |dp| <= 1e-4 for the golden comparison (the CLI test asks the same, stricter than 1e-3)
MAX_DPROB = 1e-4
UNUSED_CONV3 = {"encoder2.blocks.0.1.conv3.conv.weight", "encoder2.blocks.1.1.conv3.conv.weight",
                "encoder3.blocks.0.1.conv3.conv.weight"}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HYBRIDSEG_CATALOG", raising=False)
    torch.set_num_threads(1)


def _wrap(card: str, sd: dict):
    """The upstream nesting of a state dict (BraTS trainer: {"epoch", "best_acc", "state_dict"})."""
    return {"epoch": 300, "best_acc": np.float64(0.8854), "state_dict": sd} if card == "swin-unetr-brats21" else sd


@pytest.mark.parametrize("card", CARDS)
def test_real_size_upstream_layout_loads_strictly(card):
    """The catalog card's real network takes the upstream release's keys and shapes; only unused conv3 drop."""
    spec = ModelCard.from_dict(catalog_card(card))
    model = build_model(spec)
    keys = manifest(card)["keys"]
    sd = {k: torch.zeros(shape, dtype=getattr(torch, dtype)) for k, shape, dtype in keys}
    notes: list[str] = []
    weights = spec.weights
    load_weights_into(model, _wrap(card, sd), weights["key_layout"],
                      state_dict_key=weights.get("state_dict_key"), source=card, notes=notes)
    own = set(model.state_dict())
    dropped = {k for k, _, _ in keys if k not in own}
    if card == "unetr-btcv":
        assert UNUSED_CONV3 <= dropped  # these are exactly what MONAI 0.7 built and MONAI 1.6 does not
        assert dropped - UNUSED_CONV3 == {"vit.patch_embedding.cls_token"}
        assert len(notes) == 1 and all(k in notes[0] for k in UNUSED_CONV3)
    else:
        assert dropped == set() and notes == []


def test_unused_conv3_rule_drops_nothing_that_exists():
    """A conv3 that the network has (channel-changing block) is never dropped; a stray one is refused."""
    from HybridAttentionSegLib.core.errors import WeightsError

    spec = ModelCard.from_dict(catalog_card("unetr-btcv"))
    data = card_for_test("unetr-btcv", {"url": "http://127.0.0.1/x.pth", "sha256": None})
    model = build_model(ModelCard.from_dict(data))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    assert "encoder1.layer.conv3.conv.weight" in sd  # used: 1 -> feature_size channels
    sd["decoder2.conv_block.conv9.conv.weight"] = torch.zeros(1)  # not a residual projection: strict refusal
    with pytest.raises(WeightsError, match="unexpected keys: decoder2.conv_block.conv9"):
        load_weights_into(model, sd, spec.weights["key_layout"], source="test")


@pytest.mark.parametrize("card", CARDS)
def test_card_parameter_counts_come_from_the_manifests(card):
    """Cards carry the upstream checkpoint's counts (Testing/golden/card_facts.py writes them)."""
    sys.path.insert(0, str(__import__("golden_cases").GOLDEN))
    import card_facts

    assert card_facts.differences(card) == {}
    assert catalog_card(card)["resources"]["parameters"] == manifest(card)["parameters"]


def _reduced_network(card: str) -> torch.nn.Module:
    """Our network at the golden (reduced) size; only its integer buffers are used (digest-checked)."""
    return build_model(ModelCard.from_dict(card_for_test(card, {"url": "http://127.0.0.1/x", "sha256": None})))


def _file_card(card: str, tmp_path) -> ModelCard:
    """The reduced test card loading the upstream-layout checkpoint from a local file."""
    own = _reduced_network(card).state_dict()
    path, data = checkpoint(card, own, tmp_path / "upstream")
    real = catalog_card(card)["weights"]
    weights = {"file": str(path), "sha256": sha256(data), "format": "state_dict", "key_layout": real["key_layout"]}
    if card == "swin-unetr-brats21":  # the zip's member, as the download step extracts it
        inner = tmp_path / "upstream" / "model.pt"
        weights.update(file=str(inner), sha256=sha256(inner.read_bytes()), state_dict_key="state_dict")
    return ModelCard.from_dict(card_for_test(card, weights), tmp_path / "card.json")


@pytest.mark.parametrize("card", CARDS)
def test_other_grid_matches_upstream(card, tmp_path):
    """Another orientation and spacing: resampling, its inverse and the blending are upstream's."""
    spec = _file_card(card, tmp_path)
    data, affine = input_volume(card, "other-grid")
    result = Segmenter(spec, device="cpu", fast_path="off").run(Volume(data, affine), keep_probabilities=True)
    stats = compare(card, "other-grid", result.labelmap, result.probabilities)
    logger.info("%s other-grid vs MONAI %s: %s", card, record(card)["monai"], stats)
    assert stats["max_dprob"] <= MAX_DPROB, stats
    assert stats["differing_not_near_tie"] == 0, stats


def _serve_weights(card: str, tmp_path):
    """(files for the HTTP server, card weights block pointing at them) in the upstream layout."""
    own = _reduced_network(card).state_dict()
    path, data = checkpoint(card, own, tmp_path / "upstream")
    if same_bytes_expected(card):  # the very file the old MONAI release wrote
        assert sha256(data) == record(card)["checkpoint"]["sha256"]
    weights = dict(catalog_card(card)["weights"])
    if card == "swin-unetr-btcv":  # upstream publishes an MD5 only: keep that
        weights.update(md5=hashlib.md5(data).hexdigest(), sha256=None)
    else:
        weights.update(sha256=sha256(data))
    if card == "swin-unetr-brats21":
        inner = (tmp_path / "upstream" / "model.pt").read_bytes()
        weights["archive"] = dict(weights["archive"], member=BRATS_MEMBER, member_sha256=sha256(inner),
                                  member_size_bytes=len(inner))
        weights.pop("size_bytes", None)
    return {path.name: data}, weights, path.name


def _write_nifti(path, data: np.ndarray, affine: np.ndarray) -> None:
    array = data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))


def _cli(*args, env) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "HybridAttentionSegLib.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.parametrize("card", CARDS)
def test_download_then_segment_matches_upstream(card, tmp_path):
    """Done means: upstream-layout checkpoint over HTTP -> `hybridseg download` -> `segment --probabilities`."""
    files, weights, name = _serve_weights(card, tmp_path)
    data, affine = input_volume(card, "card-grid")
    image = tmp_path / "case.nii.gz"
    _write_nifti(image, data, affine)
    env = {**os.environ, "HYBRIDSEG_CACHE": str(tmp_path / "cache"), "HYBRIDSEG_FAST_PATH": "off",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(__import__("golden_cases").ROOT / "HybridAttentionSeg")}
    with http_server(files) as server:
        weights["url"] = server.url(f"files/{name}")
        card_json = tmp_path / "catalog.json"
        card_json.write_text(json.dumps(card_for_test(card, weights)))
        model_id = f"golden-{card}"
        done = _cli("--catalog", str(card_json), "download", model_id, "--no-progress", env=env)
        assert done.returncode == 0, done.stderr
        assert server.hits[f"/files/{name}"] == 1
    run = _cli("--catalog", str(card_json), "segment", str(image), "--model", model_id, "--out",
               str(tmp_path / "out"), "--probabilities", "--attention", "none", "--device", "cpu",
               "--no-progress", env=env)
    assert run.returncode == 0, run.stderr
    probabilities, header = nrrd.read(str(tmp_path / "out" / "case.probabilities.nrrd"))
    labels, _ = nrrd.read(str(tmp_path / "out" / "case.seg.nrrd"))
    assert header["kinds"][0] == "list"  # (C, I, J, K) in pynrrd's index order
    probabilities = np.asarray(probabilities, dtype=np.float32)
    assert probabilities.shape[1:] == labels.shape == data.shape[1:]
    stats = compare(card, "card-grid", np.asarray(labels), probabilities)
    logger.info("%s card-grid via CLI vs MONAI %s: %s", card, record(card)["monai"], stats)
    assert stats["max_dprob"] <= MAX_DPROB, stats
    assert stats["differing_not_near_tie"] == 0, stats


def test_import_model_of_a_monai_07_state_dict_drops_only_unused_conv3_with_a_notice(tmp_path, caplog):
    """`import-model` of the upstream-layout UNETR file (+ card): strict load, the 3 drops named in a notice."""
    from HybridAttentionSegLib.core.weights.importer import import_model

    path, _ = checkpoint("unetr-btcv", _reduced_network("unetr-btcv").state_dict(), tmp_path / "upstream")
    card = card_for_test("unetr-btcv", {"url": "http://127.0.0.1/x", "sha256": None,
                                        "key_layout": "monai-research-unetr"})
    card["id"] = "imported-unetr"
    card_file = tmp_path / "card.json"
    card_file.write_text(json.dumps(card))
    with caplog.at_level(logging.INFO):
        imported = import_model(path, card_file)
    notices = [r.getMessage() for r in caplog.records if "residual-projection" in r.getMessage()]
    assert len(notices) == 1 and all(k in notices[0] for k in UNUSED_CONV3)
    assert imported.weights["key_layout"] == "hybridseg"


def test_legacy_merging_concatenates_the_pre_15_slices():
    """MONAI 0.9-1.4 ``PatchMerging.forward`` took x0..x7 = (0,0,0) (1,0,0) (0,1,0) (0,0,1) (1,0,1) (0,1,0)
    (0,0,1) (1,1,1) (offsets along D, H, W; from the 1.4.0 source); MONAI 1.6.1 takes other ones."""
    from HybridAttentionSegLib.core.models.networks.swin_legacy import LegacyPatchMerging
    from monai.networks.nets.swin_unetr import PatchMerging

    x = torch.arange(8, dtype=torch.float32).reshape(1, 2, 2, 2, 1)  # value = 4*d + 2*h + w
    legacy, current = LegacyPatchMerging(dim=1), PatchMerging(dim=1)
    for merging in (legacy, current):
        merging.norm, merging.reduction = torch.nn.Identity(), torch.nn.Identity()
    expected = [4 * d + 2 * h + w for d, h, w in
                [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1)]]
    assert legacy(x).flatten().tolist() == expected
    assert current(x).flatten().tolist() != expected
