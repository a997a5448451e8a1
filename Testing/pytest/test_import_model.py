"""Bring your own model: safetensors / state dict + card, id rules and label checks, and untrusted weights that
must be refused without running anything (pickles with code, TorchScript, torch.package, .pt2). MONAI bundles and
archives: ``test_import_bundle.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from code_formats import write_code_format_files
from helpers_weights import (
    MarkerPayload,
    build,
    isolated_cache,  # noqa: F401 (the autouse fixture `cache`)
    nothing_imported,
    same_state,
    tiny_card,
    torch_bytes,
    write_card,
)
from HybridAttentionSegLib.cli import main
from HybridAttentionSegLib.core.errors import UnsafeModelError, UserInputError, WeightsError
from HybridAttentionSegLib.core.models.cards import load_catalog
from HybridAttentionSegLib.core.weights import load_model_weights
from HybridAttentionSegLib.core.weights.importer import import_model, models_dir

ROOT = Path(__file__).resolve().parents[2]


def test_import_safetensors_with_card(tmp_path, capsys):
    from safetensors.torch import save

    card = tiny_card("attention_unet", "my-att", n_labels=2)
    source = build(card).state_dict()
    (tmp_path / "w.safetensors").write_bytes(save(source))
    card_file = write_card(tmp_path / "card.json", card)
    assert (
        main(["import-model", str(tmp_path / "w.safetensors"), "--card", str(card_file), "--id", "byo-att"])
        == 0
    )
    assert "imported byo-att" in capsys.readouterr().out
    imported = load_catalog()["byo-att"]
    assert imported.weights["format"] == "safetensors" and imported.weights["key_layout"] == "hybridseg"
    assert Path(imported.weights["file"]) == models_dir() / "byo-att" / "model.safetensors"
    fresh = build(card)
    load_model_weights(imported, fresh)
    assert same_state(source, fresh.state_dict())
    assert main(["models", "--json"]) == 0
    listed = {c["id"]: c for c in json.loads(capsys.readouterr().out)}
    assert listed["byo-att"]["downloaded"] is True


def test_import_pt_state_dict_with_layout(tmp_path):
    """A research-style .pt (numpy scalar, module. prefix), mapped with the key layout the card names."""
    card = tiny_card("swin_unetr", "my-swin", n_labels=2)
    source = build(card).state_dict()
    checkpoint = {
        "epoch": 10,
        "best_acc": np.float64(0.9),
        "state_dict": {"module." + k: v for k, v in source.items()},
    }
    (tmp_path / "model.pth").write_bytes(torch_bytes(checkpoint))
    card["weights"] = {"sha256": None, "url": "https://example.org/x", "key_layout": "research-swin-unetr"}
    imported = import_model(tmp_path / "model.pth", write_card(tmp_path / "card.json", card))
    assert imported.id == "my-swin"
    fresh = build(card)
    load_model_weights(imported, fresh)
    assert same_state(source, fresh.state_dict())


def test_bare_weights_need_a_card(tmp_path):
    (tmp_path / "w.pt").write_bytes(torch_bytes({"a": torch.ones(1)}))
    with pytest.raises(UserInputError, match="--card"):
        import_model(tmp_path / "w.pt")


def test_weights_that_do_not_fit_are_refused(tmp_path):
    card = tiny_card("segresnet", "misfit", n_labels=2)
    (tmp_path / "w.pt").write_bytes(torch_bytes(build(card).state_dict()))
    other = tiny_card("attention_unet", "misfit", n_labels=2)
    with pytest.raises(WeightsError, match="missing keys"):
        import_model(tmp_path / "w.pt", write_card(tmp_path / "card.json", other))
    assert nothing_imported()


@pytest.mark.parametrize("force_env", [False, True])
def test_pickle_with_code_never_runs(tmp_path, monkeypatch, force_env):
    if force_env:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "marker"
    card = tiny_card("segresnet", "evil", n_labels=2)
    (tmp_path / "evil.pt").write_bytes(torch_bytes({"x": MarkerPayload(marker)}))
    with pytest.raises(UnsafeModelError, match="refusing to unpickle"):
        import_model(tmp_path / "evil.pt", write_card(tmp_path / "card.json", card))
    assert not marker.exists()
    assert nothing_imported()


def test_pickle_with_code_cli_subprocess(tmp_path):
    """End to end in a fresh interpreter with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1: exit 2, no marker."""
    marker = tmp_path / "marker"
    (tmp_path / "evil.pt").write_bytes(torch_bytes([MarkerPayload(marker)]))
    card_file = write_card(tmp_path / "card.json", tiny_card("segresnet", "evil", n_labels=2))
    env = dict(
        os.environ,
        TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
        HYBRIDSEG_CACHE=str(tmp_path / "cache"),
        PYTHONPATH=str(ROOT / "HybridAttentionSeg"),
        OMP_NUM_THREADS="1",
    )
    code = "import sys; from HybridAttentionSegLib.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, "import-model", str(tmp_path / "evil.pt"), "--card", str(card_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "refusing" in proc.stderr and "io.open" in proc.stderr
    assert not marker.exists()


def test_code_formats_are_refused(tmp_path):
    card_file = write_card(tmp_path / "card.json", tiny_card("segresnet", "code", n_labels=2))
    write_code_format_files(tmp_path)  # in a child: torch.export must never run in this (rendering) process
    for name, words in (
        ("scripted.pt", "TorchScript"),
        ("exported.pt2", ".pt2"),
        ("package.pt", "torch.package"),
    ):
        with pytest.raises(UnsafeModelError, match=words.replace(".", r"\.")):
            import_model(tmp_path / name, card_file)
    assert nothing_imported()


def test_id_rules(tmp_path):
    from safetensors.torch import save

    card = tiny_card("segresnet", "dup", n_labels=2)
    (tmp_path / "w.safetensors").write_bytes(save(build(card).state_dict()))
    card_file = write_card(tmp_path / "card.json", card)
    with pytest.raises(UserInputError, match="built-in"):
        import_model(tmp_path / "w.safetensors", card_file, model_id="swin-unetr-btcv")
    with pytest.raises(UserInputError, match="invalid"):
        import_model(tmp_path / "w.safetensors", card_file, model_id="Bad Id")
    import_model(tmp_path / "w.safetensors", card_file)
    with pytest.raises(UserInputError, match="--force"):
        import_model(tmp_path / "w.safetensors", card_file)
    assert import_model(tmp_path / "w.safetensors", card_file, force=True).id == "dup"


# --- issue 10 #8: the card's labels must match the network's output channels ---------------------------------
def _with_output(card: dict, **output) -> dict:
    return {**card, "output": output}


LABEL_MISMATCHES = {
    # 4 output channels (background + 3 classes) but 2 labels: channel 3 would paint voxels no segment owns
    "fewer-labels-than-channels": (lambda c: _with_output(c, channels=4), "no label for channel(s) [3]"),
    # label values 1 and 5 in a 3-channel network: value 5 can never appear, channel 2 has no segment
    "label-beyond-last-channel": (
        lambda c: {**_with_output(c, channels=3),
                   "labels": [c["labels"][0], {**c["labels"][1], "value": 5}]}, "beyond the last channel"),
    # sigmoid regions must read existing channels and paint declared labels
    "sigmoid-region-channel-missing": (
        lambda c: _with_output(c, activation="sigmoid", channels=2,
                               regions=[{"channel": 0, "label": 1}, {"channel": 2, "label": 2}]),
        "regions read channels [2]"),
    "sigmoid-label-never-painted": (
        lambda c: _with_output(c, activation="sigmoid", channels=2, regions=[{"channel": 0, "label": 1}]),
        "painted by no region"),
}


@pytest.mark.parametrize("case", sorted(LABEL_MISMATCHES))
def test_import_refuses_labels_that_do_not_match_the_outputs(tmp_path, capsys, case):
    from safetensors.torch import save

    change, needle = LABEL_MISMATCHES[case]
    card = change(tiny_card("attention_unet", "mismatch", n_labels=2))
    (tmp_path / "w.safetensors").write_bytes(save(build(card).state_dict()))  # weights fit the network
    card_file = write_card(tmp_path / "card.json", card)
    rc = main(["import-model", str(tmp_path / "w.safetensors"), "--card", str(card_file)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and err[-1].startswith("hybridseg: error:") and needle in err[-1], err
    assert nothing_imported()


def test_import_accepts_labels_matching_the_outputs(tmp_path):
    from safetensors.torch import save

    card = _with_output(tiny_card("attention_unet", "matching", n_labels=3), channels=4)
    (tmp_path / "w.safetensors").write_bytes(save(build(card).state_dict()))
    imported = import_model(tmp_path / "w.safetensors", card_path=write_card(tmp_path / "card.json", card))
    assert imported.out_channels == 4 and [label["value"] for label in imported.labels] == [1, 2, 3]
