"""Weight loading: key-layout mappers on synthetic state dicts in the upstream layouts, strict loading with
clear errors, safetensors / weights_only parsing, and refusal of files that carry code."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from code_formats import write_code_format_files
from helpers_weights import MarkerPayload, build, sha256, tiny_card, torch_bytes
from HybridAttentionSegLib.core import weights as wt
from HybridAttentionSegLib.core.errors import ChecksumError, UnsafeModelError, WeightsError
from HybridAttentionSegLib.core.models.cards import SCHEMA_PATH, load_card_file


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDSEG_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)


def _card_with_file(tmp_path, card: dict, data: bytes, name: str = "weights.pt", **weights):
    """Write ``data`` next to a card file (``weights.file`` relative to the card) and load the card."""
    (tmp_path / name).write_bytes(data)
    card = dict(card, weights={"file": name, "sha256": sha256(data), **weights})
    (tmp_path / "card.json").write_text(json.dumps(card))
    return load_card_file(tmp_path / "card.json")[0]


def _same(a: dict, b: dict, skip=()) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if k not in skip)


def _unetr_card():
    card = tiny_card("unetr", "unetr-tiny", n_labels=3)
    card["architecture"]["kwargs"]["proj_type"] = "perceptron"
    return card


def test_research_unetr_layout(tmp_path):
    """Old MONAI (research UNETR checkpoint): no norm_cross_attn, a cls_token in the patch embedding."""
    card = _unetr_card()
    torch.manual_seed(1)
    source = build(card).state_dict()
    upstream = {k: v for k, v in source.items() if ".norm_cross_attn." not in k}
    upstream["vit.patch_embedding.cls_token"] = torch.randn(
        1, 1, card["architecture"]["kwargs"]["hidden_size"]
    )
    assert len(upstream) < len(source)  # the layouts really differ
    loaded = _card_with_file(tmp_path, card, torch_bytes(upstream), key_layout="monai-research-unetr")
    fresh = build(card)
    defaults = {k: v.clone() for k, v in fresh.state_dict().items() if ".norm_cross_attn." in k}
    wt.load_model_weights(loaded, fresh)
    got = fresh.state_dict()
    assert _same(source, got, skip=defaults)
    assert all(torch.equal(got[k], v) for k, v in defaults.items())  # unused LayerNorms keep their init
    # the plain "monai" layout does not know the stale cls_token: strict load refuses and names it
    plain = _card_with_file(tmp_path, card, torch_bytes(upstream), key_layout="monai")
    other = build(card)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(WeightsError) as err:
        wt.load_model_weights(plain, other)
    assert "1 unexpected keys: vit.patch_embedding.cls_token" in str(err.value)
    assert _same(before, other.state_dict())  # nothing was copied


def test_monai_13_vit_cross_attn_keys_and_module_prefix(tmp_path):
    """MONAI 1.3-era ViTs saved blocks.N.cross_attn.* (always built then); DataParallel adds module."""
    card = _unetr_card()
    source = build(card).state_dict()
    hidden = card["architecture"]["kwargs"]["hidden_size"]
    upstream = dict(source)
    for i in range(12):
        for part in ("to_q", "to_k", "to_v", "out_proj"):
            upstream[f"vit.blocks.{i}.cross_attn.{part}.weight"] = torch.randn(hidden, hidden)
    upstream = {"module." + k: v for k, v in upstream.items()}
    loaded = _card_with_file(
        tmp_path, card, torch_bytes({"state_dict": upstream, "epoch": 3}), key_layout="monai"
    )
    fresh = build(card)
    wt.load_model_weights(loaded, fresh)
    assert _same(source, fresh.state_dict())


def test_research_swin_layout_with_numpy_scalars(tmp_path):
    """research-contributions checkpoints: {"epoch", "best_acc": numpy float, "state_dict": {"module.*"}}."""
    card = tiny_card("swin_unetr", "swin-tiny", n_labels=2)
    card["output"] = {"activation": "sigmoid", "channels": 3, "regions": [{"channel": 0, "label": 1}]}
    source = build(card).state_dict()
    checkpoint = {
        "epoch": 300,
        "best_acc": np.float64(0.8854),
        "lr": np.float32(1e-4),
        "state_dict": {"module." + k: v for k, v in source.items()},
    }
    loaded = _card_with_file(
        tmp_path, card, torch_bytes(checkpoint), key_layout="research-swin-unetr", state_dict_key="state_dict"
    )
    assert loaded.out_channels == 3
    fresh = build(card)
    wt.load_model_weights(loaded, fresh)
    assert _same(source, fresh.state_dict())
    flat = wt.load_state_dict_for_card(loaded)
    assert set(flat) == set(source)


def test_numpy_1x_pickle_names_are_accepted():
    """Checkpoints written under NumPy 1.x name the scalar reconstructor numpy.core.multiarray.scalar."""
    data = torch_bytes({"best_acc": np.float64(0.5), "state_dict": {"a": torch.ones(2)}})
    source, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as rewritten:
        for info in source.infolist():
            raw = source.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in raw
                raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            rewritten.writestr(info.filename, raw)
    loaded = wt.torch_load_bytes(out.getvalue(), "numpy1.pt")
    assert float(loaded["best_acc"]) == 0.5 and torch.equal(loaded["state_dict"]["a"], torch.ones(2))


@pytest.mark.parametrize("wrap", [False, True])
def test_model_zoo_bundle_layout(tmp_path, wrap):
    """Model-zoo model.pt: a plain state dict (ignite single-object checkpoint) or {"model": ...}."""
    card = tiny_card("swin_unetr", "swin-zoo", n_labels=13)
    source = build(card).state_dict()
    obj = {"model": source} if wrap else source
    loaded = _card_with_file(tmp_path, card, torch_bytes(obj), key_layout="monai-bundle")
    fresh = build(card)
    wt.load_model_weights(loaded, fresh)
    assert _same(source, fresh.state_dict())


def test_strict_errors_list_missing_unexpected_and_shapes(tmp_path):
    card = tiny_card("segresnet", "seg", n_labels=2)
    source = build(card).state_dict()
    broken = dict(source)
    missing = sorted(broken)[0]
    del broken[missing]
    broken["extra.weight"] = torch.zeros(1)
    wider = card["architecture"]["kwargs"]["init_filters"] * 2
    other = build(card, init_filters=wider).state_dict()  # different widths -> shape mismatches
    fresh = build(card)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(WeightsError) as err:
        wt.load_weights_into(fresh, broken, "monai", source="test weights")
    message = str(err.value)
    assert f"1 missing keys: {missing}" in message and "1 unexpected keys: extra.weight" in message
    assert "\n" not in message and "model card" in message
    with pytest.raises(WeightsError, match="shape mismatches"):
        wt.load_weights_into(fresh, other, "monai")
    assert _same(before, fresh.state_dict())
    with pytest.raises(WeightsError, match="state_dict_key"):
        wt.load_weights_into(fresh, {"state_dict": source}, "monai", state_dict_key="model")
    with pytest.raises(KeyError, match="did you mean"):
        wt.load_weights_into(fresh, source, "monai-reserch-unetr")


def test_safetensors_roundtrip_and_corruption(tmp_path):
    from safetensors.torch import save

    card = tiny_card("attention_unet", "att", n_labels=2)
    source = build(card).state_dict()
    data = save({k: v.contiguous() for k, v in source.items()})
    loaded = _card_with_file(
        tmp_path, card, data, name="w.safetensors", format="safetensors", key_layout="hybridseg"
    )
    fresh = build(card)
    wt.load_model_weights(loaded, fresh)
    assert _same(source, fresh.state_dict())
    # same bytes, altered after the card was written: the hash check runs on every load
    (tmp_path / "w.safetensors").write_bytes(data[:-4] + b"\0\0\0\0")
    with pytest.raises(ChecksumError, match="modified or corrupted"):
        wt.load_model_weights(loaded, fresh)
    # a broken safetensors file whose hash is right: parse error, one line
    broken = data[:8] + b"{" + data[9:200]
    bad = _card_with_file(tmp_path, card, broken, name="b.safetensors", key_layout="hybridseg")
    with pytest.raises(WeightsError, match="not a valid safetensors"):
        wt.load_model_weights(bad, fresh)


@pytest.mark.parametrize("force_env", [False, True])
def test_pickle_with_code_is_refused(tmp_path, monkeypatch, force_env):
    """A .pt whose unpickling would create a marker file: refused, the marker never appears."""
    if force_env:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    card = tiny_card("segresnet", "evil", n_labels=2)
    payload = {"state_dict": build(card).state_dict(), "extra": MarkerPayload(marker)}
    loaded = _card_with_file(tmp_path, card, torch_bytes(payload))
    with pytest.raises(UnsafeModelError) as err:
        wt.load_model_weights(loaded, build(card))
    assert "io.open" in str(err.value) and "refusing" in str(err.value)
    assert not marker.exists()


def test_torchscript_and_version_gate(tmp_path, monkeypatch):
    card = tiny_card("segresnet", "ts", n_labels=2)
    model = build(card)
    scripted = write_code_format_files(tmp_path / "code")["torchscript"]  # made in a child process
    assert wt.sniff_format(scripted) == "torchscript"
    loaded = _card_with_file(tmp_path, card, scripted.read_bytes(), name="ts.pt")
    with pytest.raises(UnsafeModelError, match="TorchScript"):
        wt.load_model_weights(loaded, build(card))
    # torch older than the patched floor: .pt loading is refused, safetensors still works
    monkeypatch.setattr(wt.load, "MIN_TORCH_FOR_PICKLE", "99.0")
    plain = _card_with_file(tmp_path, card, torch_bytes(model.state_dict()), name="ok.pt")
    with pytest.raises(WeightsError, match="needs torch >= 99.0"):
        wt.load_model_weights(plain, build(card))
    from safetensors.torch import save

    st = _card_with_file(tmp_path, card, save(model.state_dict()), name="ok.safetensors")
    wt.load_model_weights(st, build(card))


def test_key_layouts_match_schema():
    schema = json.loads(SCHEMA_PATH.read_text())
    assert set(schema["properties"]["weights"]["properties"]["key_layout"]["enum"]) == set(wt.KEY_LAYOUTS)
