"""The golden cases of ``Testing/golden`` (written by the MONAI releases that wrote the upstream checkpoints).

Rebuilds, from the recorded recipe, exactly what the old release used: the seeded state dict in the upstream
key order (every tensor checked against the SHA-256 the old release recorded), the checkpoint file in the
upstream layout, the input volumes; and turns a catalog card into a test card with the reduced network size.
Expected values are only ever read from the golden files, never computed here.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "Testing" / "golden"
MODELS = ROOT / "HybridAttentionSeg" / "Resources" / "Models"
if str(GOLDEN) not in sys.path:
    sys.path.insert(0, str(GOLDEN))
import golden_data as gd  # noqa: E402

CARDS = ("swin-unetr-btcv", "unetr-btcv", "swin-unetr-brats21")
#: upstream label value -> card label value (BraTS test.py paints ET as 4, the card as 3)
LABEL_MAP = {"swin-unetr-brats21": {4: 3}}
BRATS_MEMBER = "fold0_f48_ep300_4gpu_dice0_8854/model.pt"


@lru_cache(maxsize=None)
def record(card: str) -> dict:
    return json.loads((GOLDEN / "data" / f"golden-{card}.json").read_text())


@lru_cache(maxsize=None)
def manifest(card: str) -> dict:
    return json.loads((GOLDEN / "data" / f"manifest-{card}.json").read_text())


def arrays(card: str, case: str) -> dict:
    with np.load(GOLDEN / "data" / f"golden-{card}.npz") as data:
        return {name: data[f"{case}/{name}"]
                for name in ("labels", "sample_index", "sample_prob", "near_tie_index")}


def catalog_card(card: str) -> dict:
    return json.loads((MODELS / f"{card}.json").read_text())


def card_for_test(card: str, weights: dict) -> dict:
    """The catalog card at the golden (reduced) network size, with ``weights`` instead of the real ones."""
    data = copy.deepcopy(catalog_card(card))
    reduced = {k: v for k, v in record(card)["architecture_kwargs"].items()
               if k not in ("in_channels", "out_channels")}
    data["architecture"]["kwargs"].update(reduced)
    data["id"] = f"golden-{card}"
    data["weights"] = weights
    data.pop("sample_data", None)
    return data


def state_dict(card: str, own: dict) -> dict:
    """The seeded state dict in the upstream key order; integer buffers from ``own`` (our network's)."""
    rec = record(card)
    out = {}
    for key, shape, dtype, digest in rec["state_dict"]:
        if dtype.startswith("float"):
            tensor = torch.from_numpy(gd.seeded_tensor(rec["seed"], key, tuple(shape), rec["out_gain"]))
        else:
            tensor = own[key].detach().clone()
        assert gd.sha256(tensor.numpy()) == digest, f"{card}: {key} differs from what MONAI {rec['monai']} saved"
        out[key] = tensor
    return out


def checkpoint(card: str, own: dict, folder: Path) -> tuple[Path, bytes]:
    """Write the checkpoint file in the upstream layout under its upstream name; returns (path, bytes)."""
    sd = state_dict(card, own)
    folder.mkdir(parents=True, exist_ok=True)
    if card == "swin-unetr-brats21":
        inner = folder / "model.pt"
        torch.save({"epoch": 300, "best_acc": np.float64(0.8854), "state_dict": sd}, inner)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(zipfile.ZipInfo(BRATS_MEMBER, date_time=(2022, 1, 1, 0, 0, 0)), inner.read_bytes())
        path = folder / record(card)["checkpoint"]["name"]
        path.write_bytes(buffer.getvalue())
    else:
        path = folder / record(card)["checkpoint"]["name"]
        torch.save(sd, path)
    return path, path.read_bytes()


def same_bytes_expected(card: str) -> bool:
    """Whether this environment must reproduce the old release's file byte for byte (same torch; NumPy's
    pickle path of ``best_acc`` changed between NumPy 1 and 2, so BraTS also needs the same NumPy major)."""
    rec = record(card)
    same_numpy = rec["numpy"].split(".")[0] == np.__version__.split(".")[0]
    return rec["torch"] == torch.__version__ and (card != "swin-unetr-brats21" or same_numpy)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def input_volume(card: str, case: str) -> tuple[np.ndarray, np.ndarray]:
    """(data (C, I, J, K) float32, affine) of a golden case, checked against the recorded digest."""
    spec = record(card)["cases"][case]
    shape, affine = tuple(spec["shape"]), np.asarray(spec["affine"], dtype=np.float64)
    if card == "swin-unetr-brats21":
        data = gd.mr_phantom(shape, affine)
        assert gd.sha256(data) == spec["input_sha256"]
    else:
        image = gd.ct_phantom(shape, affine)
        assert gd.sha256(image) == spec["input_sha256"]
        data = image[None]
    return data, affine


def compare(card: str, case: str, labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Our labels (I, J, K) and probabilities (N, I, J, K) against upstream's: max |dp| at the sampled voxels,
    label agreement, the voxels that differ, and how many of those upstream itself decided by less than the
    tests' probability tolerance (``near_tie_index``, recorded by the old release)."""
    golden = arrays(card, case)
    expected = golden["labels"].copy()
    for upstream, ours in LABEL_MAP.get(card, {}).items():
        expected[golden["labels"] == upstream] = ours
    ours = probabilities.reshape(len(probabilities), -1)[:, golden["sample_index"]]
    differ = labels != expected
    differing = np.flatnonzero(differ.ravel())
    return {
        "max_dprob": float(np.abs(ours - golden["sample_prob"]).max()),
        "agreement": float(1.0 - differ.mean()),
        "differing_voxels": int(differ.sum()),
        "differing_not_near_tie": int((~np.isin(differing, golden["near_tie_index"])).sum()),
        "near_tie_voxels": int(golden["near_tie_index"].size),
        "voxels": int(differ.size),
    }
