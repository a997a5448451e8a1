"""The model catalog: every card validates against the schema, the real downloadable hybrids carry what the
issue asks for (URLs, hashes and their source, licence, SNOMED-coded labels, preprocessing, ROI, metrics,
resources), catalog files load through --catalog / HYBRIDSEG_CATALOG in the `models --json` schema, and
(slow) each real card's network builds at full size and accepts a checkpoint in its upstream key layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest
import torch
from helpers_weights import torch_bytes
from HybridAttentionSegLib.cli import main
from HybridAttentionSegLib.core import weights as wt
from HybridAttentionSegLib.core.models.cards import (
    MODELS_DIR,
    SCHEMA_PATH,
    ModelCard,
    cache_dir,
    get_card,
    load_card_file,
    load_catalog,
)

REAL = ("swin-unetr-btcv", "unetr-btcv", "swin-unetr-brats21")
CARD_FILES = sorted(p for p in MODELS_DIR.glob("*.json") if p != SCHEMA_PATH)


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HYBRIDSEG_CATALOG", raising=False)


def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


@pytest.mark.parametrize("path", CARD_FILES, ids=[p.stem for p in CARD_FILES])
def test_every_catalog_file_validates(path):
    schema = json.loads(SCHEMA_PATH.read_text())
    data = json.loads(path.read_text())
    for item in data if isinstance(data, list) else [data]:
        jsonschema.validate(item, schema)
    cards = load_card_file(path)
    for card in cards:
        card.spec.constraints.check_roi(card.roi_size)
        values = {label["value"] for label in card.labels}
        if card.activation == "softmax":
            assert card.out_channels == max(values) + 1
        else:  # sigmoid: every region paints a declared label from an existing channel
            assert {r["label"] for r in card.output_regions} <= values
            assert all(r["channel"] < card.out_channels for r in card.output_regions)


@pytest.mark.parametrize("model_id", REAL)
def test_real_pretrained_entries_are_complete(model_id):
    card = get_card(model_id)
    weights = card.weights
    urls = [weights["url"]] if weights.get("url") else weights["urls"]
    assert urls and all(u.startswith("https://") for u in urls)
    assert weights.get("sha256") or weights.get("md5") or "no hash" in weights["hash_source"].lower()
    assert len(weights["hash_source"]) > 40  # says where the hash comes from (or why there is none)
    assert weights["format"] == "state_dict" and weights["key_layout"] in wt.KEY_LAYOUTS
    assert card.data["license"] and card.data["intended_use"]
    for label in card.labels:
        term = label["terminology"]
        assert term["type"]["scheme"] in ("SCT", "NCIt") and term["type"]["code"] and term["category"]["code"]
        assert len(label["color"]) == 3
    assert card.orientation and card.spacing and card.intensity["method"] in ("window", "zscore")
    card.spec.constraints.check_roi(card.roi_size)
    metrics = card.data["metrics"]
    assert all(m["source"] for m in metrics)
    assert metrics or "metrics_note" in card.data["training"]
    resources = card.data["resources"]
    for key in ("parameters", "gpu_memory_gb_recommended", "cpu_ram_gb_recommended", "basis"):
        assert resources[key]
    assert card.data["references"]
    assert cache_dir() in card.cached_weights_path().parents
    assert not card.bundled and not card.downloaded


def test_swin_btcv_matches_the_model_zoo():
    card = get_card("swin-unetr-btcv")
    assert card.weights["md5"] == "50dd67a01b28a1d5487fd9ac27e682fb"
    assert card.weights["url"].endswith("/model_zoo/model_swin_unetr_btcv_segmentation_v1.pt")
    assert card.architecture_kwargs == {"feature_size": 48, "downsample": "merging-legacy"}
    assert card.out_channels == 14 and card.blend == "constant" and card.preprocessing_order == "resample-first"
    codes = {label["name"]: label["terminology"]["type"]["code"] for label in card.labels}
    assert codes["Spleen"] == "78961009" and codes["Liver"] == "10200004" and codes["Pancreas"] == "15776009"
    assert card.intensity["window"] == [-175.0, 250.0] and card.spacing == (1.5, 1.5, 2.0)
    assert get_card("unetr-btcv").architecture_kwargs["proj_type"] == "perceptron"  # was pos_embed


def test_brats_card_is_multilabel_sigmoid():
    card = get_card("swin-unetr-brats21")
    assert card.in_channels == 4 and len(card.data["input"]["modalities"]) == 4
    assert card.activation == "sigmoid" and card.out_channels == 3 and card.output_threshold == 0.5
    assert sorted(r["label"] for r in card.output_regions) == [label["value"] for label in card.labels]
    assert {r["channel"] for r in card.output_regions} == {0, 1, 2}
    archive = card.weights["archive"]
    assert card.cached_weights_path().name == Path(archive["member"]).name == "model.pt"
    assert len(card.weights["sha256"]) == 64 and len(archive["member_sha256"]) == 64


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("HYBRIDSEG_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "hybridseg"


def test_models_json_roundtrip_through_catalog_files(tmp_path, monkeypatch, capsys):
    """Copy an entry from `models --json`, edit it, load it back with --catalog and HYBRIDSEG_CATALOG."""
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {c["id"] for c in listed} >= set(REAL)
    entry = next(c for c in listed if c["id"] == "swin-unetr-btcv")
    assert entry["bundled"] is False and entry["downloaded"] is False
    edited = dict(entry, id="my-swin", title="My edited Swin")
    edited["inference"] = dict(entry["inference"], overlap=0.7)
    one = tmp_path / "one.json"
    one.write_text(json.dumps(edited))  # derived fields (bundled, card_path...) are ignored on load
    second = dict(edited, id="my-swin-2")
    two = tmp_path / "two.json"
    two.write_text(json.dumps([second]))
    assert main(["--catalog", str(one), "models", "--json"]) == 0
    again = {c["id"]: c for c in json.loads(capsys.readouterr().out)}
    assert again["my-swin"]["title"] == "My edited Swin" and again["my-swin"]["inference"]["overlap"] == 0.7
    monkeypatch.setenv("HYBRIDSEG_CATALOG", os.pathsep.join([str(one), str(two)]))
    catalog = load_catalog()
    assert {"my-swin", "my-swin-2"} <= set(catalog)
    assert isinstance(catalog["my-swin-2"], ModelCard)
    monkeypatch.setenv("HYBRIDSEG_CATALOG", str(tmp_path / "missing.json"))
    assert main(["models"]) == 2
    assert "HYBRIDSEG_CATALOG" in capsys.readouterr().err


def _upstream(model_id: str, state: dict):
    """A checkpoint in the upstream layout the card's key_layout is meant for, built from our state dict."""
    if model_id == "unetr-btcv":  # MONAI <= 0.7 ViT: no norm_cross_attn, cls_token in the patch embedding
        upstream = {k: v for k, v in state.items() if ".norm_cross_attn." not in k}
        upstream["vit.patch_embedding.cls_token"] = torch.zeros(1, 1, 768)
        return upstream
    if model_id == "swin-unetr-brats21":  # research-contributions save_checkpoint
        return {"epoch": 299, "best_acc": 0.8854, "state_dict": state}
    return state  # model zoo: plain state dict


@pytest.mark.slow
@pytest.mark.parametrize("model_id", REAL)
def test_full_size_network_accepts_upstream_layout(model_id, tmp_path):
    torch.set_num_threads(1)
    card = get_card(model_id)
    model = card.spec.build(card.in_channels, card.out_channels, card.roi_size, **card.architecture_kwargs)
    # the cards' parameter counts are the upstream checkpoints' (test_golden_upstream.py checks them)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    checkpoint = torch.load(
        __import__("io").BytesIO(torch_bytes(_upstream(model_id, state))), weights_only=True
    )
    target = card.spec.build(card.in_channels, card.out_channels, card.roi_size, **card.architecture_kwargs)
    wt.load_weights_into(
        target,
        checkpoint,
        card.weights["key_layout"],
        state_dict_key=card.weights.get("state_dict_key"),
        source=model_id,
    )
    got = target.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items())
