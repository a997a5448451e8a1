"""MONAI bundles read as data (folders, zip, tar; card overrides), and bundles or archives that must be refused
without running anything: expressions in the network definition, targets outside the allow-list, nested
components, archive traversal, absolute members, symlinks and oversized archives."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from helpers_weights import (
    build,
    isolated_cache,  # noqa: F401 (the autouse fixture `cache`)
    nothing_imported,
    same_state,
    tiny_card,
    torch_bytes,
    write_card,
)
from HybridAttentionSegLib.core.errors import UnsafeModelError
from HybridAttentionSegLib.core.weights import archive as arc
from HybridAttentionSegLib.core.weights import load_model_weights
from HybridAttentionSegLib.core.weights.importer import import_model


# ------------------------------------------------------------------------------------------ MONAI bundles
def _bundle_files(marker: Path, network_def: dict | None = None, state=None) -> dict[str, bytes]:
    """Files of a small but real-layout MONAI bundle (configs like model-zoo swin_unetr_btcv_segmentation)."""
    card = tiny_card("swin_unetr", "b", n_labels=3)
    network = network_def or {
        "_target_": "SwinUNETR",
        "spatial_dims": 3,
        "img_size": 64,
        "in_channels": 1,
        "out_channels": "@num_classes",
        "feature_size": 12,
        "depths": [1, 1, 1, 1],
        "num_heads": [1, 2, 2, 4],
        "use_checkpoint": False,
    }
    inference = {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "num_classes": 4,
        "device": "$torch.device('cpu')",
        "network_def": network,
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": "image",
                    "a_min": -175,
                    "a_max": 250,
                    "b_min": 0.0,
                    "b_max": 1.0,
                    "clip": True,
                },
            ],
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": [64, 64, 64],
            "sw_batch_size": 2,
            "overlap": 0.5,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [{"_target_": "Activationsd", "keys": "pred", "softmax": True}],
        },
        # never evaluated: would create the marker if it were
        "initialize": [f"$open({str(marker)!r}, 'w').close()"],
    }
    metadata = {
        "name": "Tiny test bundle",
        "version": "0.1.0",
        "task": "test",
        "intended_use": "tests only",
        "eval_metrics": {"mean_dice": 0.5},
        "network_data_format": {
            "inputs": {"image": {"modality": "CT", "num_channels": 1, "spatial_shape": [64, 64, 64]}},
            "outputs": {
                "pred": {
                    "num_channels": 4,
                    "channel_def": {"0": "background", "1": "spleen", "2": "Liver", "3": "Left Kideny"},
                }
            },
        },
    }
    if state is None:
        state = build(card).state_dict()
    return {
        "configs/metadata.json": json.dumps(metadata).encode(),
        "configs/inference.json": json.dumps(inference).encode(),
        "configs/logging.conf": b"[loggers]\nkeys=root\n",
        "models/model.pt": torch_bytes(state),
        "LICENSE": b"Apache License Version 2.0\n",
    }


def _write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _zip(path: Path, files: dict[str, bytes], prefix: str = "tiny_bundle/") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name if name.startswith(("/", "..")) else prefix + name, data)
    return path


def test_bundle_folder_read_as_data(tmp_path):
    marker = tmp_path / "evaluated"
    state = build(tiny_card("swin_unetr", "b", n_labels=3)).state_dict()
    bundle = _write_folder(tmp_path / "tiny_bundle", _bundle_files(marker, state=state))
    card = import_model(bundle)
    assert not marker.exists()  # the "$..." entries outside network_def were never evaluated
    assert card.id == "tiny-test-bundle" and card.architecture == "swin_unetr"
    assert card.architecture_kwargs == {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4]}
    assert [label["name"] for label in card.labels] == ["spleen", "Liver", "Left Kideny"]
    left = card.labels[2]["terminology"]
    assert left["type"]["code"] == "64033007" and left["modifier"]["code"] == "7771000"
    assert card.orientation == "RAS" and card.spacing == (1.5, 1.5, 2.0)
    assert card.intensity == {"method": "window", "window": [-175.0, 250.0], "range": [0.0, 1.0], "clip": True}
    assert card.preprocessing_order == "resample-first" and card.blend == "constant"  # MONAI's default mode
    assert card.roi_size == (64, 64, 64) and card.sw_batch_size == 2
    assert card.data["metrics"][0]["value"] == 0.5 and "Apache" in card.data["license"]
    fresh = build(tiny_card("swin_unetr", "b", n_labels=3))
    load_model_weights(card, fresh)
    assert same_state(state, fresh.state_dict())


def test_bundle_zip_and_tar(tmp_path):
    files = _bundle_files(tmp_path / "m")
    card = import_model(_zip(tmp_path / "bundle.zip", files), model_id="zipped")
    assert card.id == "zipped" and card.out_channels == 4
    with tarfile.open(tmp_path / "bundle.tar.gz", "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo("tiny_bundle/" + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    assert import_model(tmp_path / "bundle.tar.gz", model_id="tarred").id == "tarred"


def test_bundle_card_overrides(tmp_path):
    bundle = _write_folder(tmp_path / "b", _bundle_files(tmp_path / "m"))
    override = {
        "id": "overridden",
        "inference": {"overlap": 0.75},
        "labels": [
            {"value": v, "name": n, "color": [0.1, 0.2, 0.3]} for v, n in ((1, "A"), (2, "B"), (3, "C"))
        ],
    }
    card = import_model(bundle, write_card(tmp_path / "o.json", override))
    assert card.id == "overridden" and card.overlap == 0.75 and card.roi_size == (64, 64, 64)
    assert card.label_name(2) == "B"


def test_bundle_with_expression_in_network_def_is_refused(tmp_path):
    marker = tmp_path / "evaluated"
    network = {
        "_target_": "SwinUNETR",
        "in_channels": f"$open({str(marker)!r}, 'w').close() or 1",
        "out_channels": 4,
        "feature_size": 12,
    }
    bundle = _write_folder(tmp_path / "b", _bundle_files(marker, network_def=network))
    with pytest.raises(UnsafeModelError, match="Python expression"):
        import_model(bundle)
    assert not marker.exists()
    assert nothing_imported()


@pytest.mark.parametrize(
    "target", ["monai.networks.nets.UNet", "os.system", "$monai.networks.nets.vista3d132"]
)
def test_bundle_target_outside_allow_list(tmp_path, target):
    network = {"_target_": target, "in_channels": 1, "out_channels": 4}
    bundle = _write_folder(tmp_path / "b", _bundle_files(tmp_path / "m", network_def=network))
    with pytest.raises(UnsafeModelError):
        import_model(bundle)
    assert nothing_imported()


def test_bundle_nested_component_refused(tmp_path):
    network = {
        "_target_": "SwinUNETR",
        "in_channels": 1,
        "out_channels": 4,
        "feature_size": 12,
        "norm_name": {"_target_": "os.getcwd"},
    }
    bundle = _write_folder(tmp_path / "b", _bundle_files(tmp_path / "m", network_def=network))
    with pytest.raises(UnsafeModelError, match="nested component"):
        import_model(bundle)


def test_zip_with_parent_member_is_refused(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    files = dict(_bundle_files(tmp_path / "m"), **{"../escaped.txt": b"outside"})
    archive = _zip(work / "bundle.zip", files)
    with pytest.raises(UnsafeModelError, match=r"'\.\./escaped\.txt'"):
        import_model(archive)
    assert not (tmp_path / "escaped.txt").exists() and not (work.parent / "escaped.txt").exists()
    assert sorted(p.name for p in work.iterdir()) == ["bundle.zip"]
    assert nothing_imported()


def test_zip_with_absolute_member_is_refused(tmp_path):
    files = dict(_bundle_files(tmp_path / "m"), **{str(tmp_path / "abs.txt"): b"x"})
    with pytest.raises(UnsafeModelError, match="unsafe member"):
        import_model(_zip(tmp_path / "bundle.zip", files))
    assert not (tmp_path / "abs.txt").exists()


def test_symlink_members_are_refused(tmp_path):
    files = _bundle_files(tmp_path / "m")
    archive = _zip(tmp_path / "bundle.zip", files)
    with zipfile.ZipFile(archive, "a") as zf:
        info = zipfile.ZipInfo("tiny_bundle/models/link.pt")
        info.create_system = 3
        info.external_attr = 0o120777 << 16  # symlink
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeModelError, match="symlink"):
        import_model(archive)
    tar_path = tmp_path / "bundle.tar"
    with tarfile.open(tar_path, "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo("b/" + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("b/models/evil")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(UnsafeModelError, match="link"):
        import_model(tar_path)
    assert nothing_imported()


def test_oversized_archive_is_refused(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "bundle.zip", _bundle_files(tmp_path / "m"))
    monkeypatch.setattr(arc, "MAX_TOTAL_BYTES", 10_000)
    with pytest.raises(UnsafeModelError, match="too large when unpacked"):
        import_model(archive)
    assert nothing_imported()
