"""Runs INSIDE a throw-away virtual environment holding an old MONAI release (see make_golden.py).

For one catalog card it builds the network exactly as the upstream code did with that MONAI version, gives
it seeded weights (``golden_data.seeded_tensor``), saves the checkpoint in the upstream layout, runs the
upstream pipeline (its transforms, its sliding-window settings, its post-processing) on synthetic volumes
and writes what the repository keeps: a key/shape manifest at the card's real size and golden outputs at a
reduced size. Imports only torch, numpy, monai and golden_data: nothing from HybridAttentionSeg, so the
expected values cannot come from the code under test.

Usage: python upstream_run.py CARD OUT_DIR
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import golden_data as gd  # noqa: E402

warnings.simplefilter("ignore")
torch.set_num_threads(1)
SEED = 20240901
N_SAMPLES = 2500
#: the golden tests' probability tolerance: labels closer than this to a tie are recorded as near-ties
TIE_TOLERANCE = 1e-4

# RAS affines: spacing on the diagonal, signs give the stored orientation
_RAS = (1.0, 1.0, 1.0)
_LPS = (-1.0, -1.0, 1.0)


def affine_for(signs, spacing, shape) -> np.ndarray:
    """Axis-aligned IJK->RAS affine whose grid is centred near the world origin."""
    a = np.eye(4)
    for axis in range(3):
        a[axis, axis] = signs[axis] * spacing[axis]
        a[axis, 3] = -signs[axis] * spacing[axis] * (shape[axis] - 1) / 2.0 + 3.0 * (axis + 1)
    return a


CARDS = {
    "swin-unetr-btcv": {
        "monai": "1.4.0",
        "source": "Project-MONAI/model-zoo models/swin_unetr_btcv_segmentation 0.5.6, configs/inference.json "
                  "(metadata monai_version 1.4.0)",
        "layout": "plain state dict (CheckpointSaver with one 'model' entry saves its state_dict)",
        "real": {"in_channels": 1, "out_channels": 14, "feature_size": 48},
        "reduced": {"feature_size": 12},
        "out_gain": 2.0,
        "cases": {
            "card-grid": {"signs": _RAS, "spacing": (1.5, 1.5, 2.0), "shape": (112, 88, 64)},
            "other-grid": {"signs": _LPS, "spacing": (1.2, 1.0, 2.5), "shape": (136, 120, 46)},
        },
    },
    "unetr-btcv": {
        "monai": "0.7.0",
        "source": "Project-MONAI/research-contributions UNETR/BTCV (requirements.txt pins monai==0.7.0): "
                  "test.py + utils/data_utils.py val_transform",
        "layout": "plain state dict (test.py: model.load_state_dict(torch.load(path)))",
        "real": {"in_channels": 1, "out_channels": 14, "feature_size": 16, "hidden_size": 768, "mlp_dim": 3072,
                 "num_heads": 12},
        "reduced": {"feature_size": 8, "hidden_size": 96, "mlp_dim": 192, "num_heads": 4},
        "out_gain": 2.0,
        "cases": {
            "card-grid": {"signs": _RAS, "spacing": (1.5, 1.5, 2.0), "shape": (120, 88, 64)},
            "other-grid": {"signs": _LPS, "spacing": (1.2, 1.0, 2.5), "shape": (150, 120, 46)},
        },
    },
    "swin-unetr-brats21": {
        "monai": "0.9.0",
        "source": "Project-MONAI/research-contributions SwinUNETR/BRATS21 (requirements.txt pins MONAI commit "
                  "07de215c; 0.9.0 is the first release after it, same SwinUNETR/UnetResBlock code): test.py "
                  "+ utils/data_utils.py test_transform",
        "layout": "{'epoch', 'best_acc', 'state_dict'} (trainer.save_checkpoint), zipped as "
                  "fold0_f48_ep300_4gpu_dice0_8854/model.pt",
        "real": {"in_channels": 4, "out_channels": 3, "feature_size": 48},
        "reduced": {"feature_size": 12},
        "out_gain": 3.0,
        "cases": {
            "card-grid": {"signs": _LPS, "spacing": (1.0, 1.0, 1.0), "shape": (120, 112, 96)},
            "other-grid": {"signs": _RAS, "spacing": (1.25, 1.25, 1.4), "shape": (96, 96, 76)},
        },
    },
}


# -------------------------------------------------------------------------------------------- networks
def build(card: str, sizes: dict) -> torch.nn.Module:
    """The card's network as the upstream code constructed it with this MONAI version."""
    if card == "unetr-btcv":
        from monai.networks.nets import UNETR

        return UNETR(in_channels=sizes["in_channels"], out_channels=sizes["out_channels"], img_size=(96, 96, 96),
                     feature_size=sizes["feature_size"], hidden_size=sizes["hidden_size"],
                     mlp_dim=sizes["mlp_dim"], num_heads=sizes["num_heads"], pos_embed="perceptron",
                     norm_name="instance", conv_block=True, res_block=True, dropout_rate=0.0)
    from monai.networks.nets import SwinUNETR

    if card == "swin-unetr-btcv":  # model-zoo network_def
        return SwinUNETR(spatial_dims=3, img_size=96, in_channels=sizes["in_channels"],
                         out_channels=sizes["out_channels"], feature_size=sizes["feature_size"],
                         use_checkpoint=False)
    return SwinUNETR(img_size=128, in_channels=sizes["in_channels"], out_channels=sizes["out_channels"],
                     feature_size=sizes["feature_size"], drop_rate=0.0, attn_drop_rate=0.0,
                     dropout_path_rate=0.0, use_checkpoint=False)  # BRATS21 test.py


def manifest(net: torch.nn.Module) -> dict:
    """Keys, shapes and dtypes of the state dict in order, plus parameter counts."""
    sd = net.state_dict()
    params = dict(net.named_parameters())
    return {
        "keys": [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()],
        "n_keys": len(sd),
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "tensor_elements": int(sum(v.numel() for v in sd.values())),
        "buffers": [k for k in sd if k not in params],
    }


def seed_weights(net: torch.nn.Module, out_gain: float) -> dict:
    """Overwrite every float tensor with golden_data's seeded values; integer buffers keep theirs."""
    sd = net.state_dict()
    new = {}
    for key, value in sd.items():
        if value.is_floating_point():
            new[key] = torch.from_numpy(gd.seeded_tensor(SEED, key, tuple(value.shape), out_gain))
        else:
            new[key] = value.clone()
    net.load_state_dict(new, strict=True)
    return new


def save_upstream(card: str, sd: dict, out: Path) -> Path:
    """Write the checkpoint in the upstream layout; returns the file (a zip for BraTS)."""
    if card == "swin-unetr-brats21":
        import zipfile

        inner = out / "model.pt"
        torch.save({"epoch": 300, "best_acc": np.float64(0.8854), "state_dict": sd}, inner)
        path = out / "fold0_f48_ep300_4gpu_dice0_8854.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            info = zipfile.ZipInfo("fold0_f48_ep300_4gpu_dice0_8854/model.pt", date_time=(2022, 1, 1, 0, 0, 0))
            zf.writestr(info, inner.read_bytes())
        return path
    path = out / ("model.pt" if card == "swin-unetr-btcv" else "UNETR_model_best_acc.pth")
    torch.save(sd, path)
    return path


# ------------------------------------------------------------------------------------------- pipelines
def run_model_zoo_swin(net, image, affine):
    """model-zoo inference.json: Orientationd, Spacingd, ScaleIntensityRanged, SlidingWindowInferer, softmax,
    Invertd(nearest_interp=False), argmax (MONAI 1.4.0, MetaTensor API)."""
    from monai.data import MetaTensor
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import (
        Activationsd,
        Compose,
        EnsureTyped,
        Invertd,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    img = MetaTensor(torch.from_numpy(image[None]), affine=torch.as_tensor(affine),
                     meta={"original_affine": affine, "spatial_shape": np.array(image.shape),
                           "filename_or_obj": "golden.nii.gz", "original_channel_dim": "no_channel"})
    pre = Compose([
        Orientationd(keys="image", axcodes="RAS"),
        Spacingd(keys="image", pixdim=[1.5, 1.5, 2.0], mode="bilinear"),
        ScaleIntensityRanged(keys="image", a_min=-175, a_max=250, b_min=0.0, b_max=1.0, clip=True),
        EnsureTyped(keys="image"),
    ])
    d = pre({"image": img})
    inferer = SlidingWindowInferer(roi_size=[96, 96, 96], sw_batch_size=4, overlap=0.5)
    with torch.no_grad():
        d["pred"] = inferer(d["image"][None], net)[0]
    post = Compose([
        Activationsd(keys="pred", softmax=True),
        Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True),
    ])
    d = post(d)
    return np.asarray(d["pred"].detach().cpu().numpy(), dtype=np.float32), tuple(d["image"].shape[1:]), None


def _meta(image, affine):
    return {"affine": affine.copy(), "original_affine": affine.copy(), "spatial_shape": np.array(image.shape[-3:]),
            "filename_or_obj": "golden.nii.gz"}


def run_research_unetr(net, image, affine):
    """research UNETR/BTCV val_transform (0.7.0): Orientationd, Spacingd, ScaleIntensityRanged(clip),
    CropForegroundd(source_key=image), sliding_window_inference(roi 96, 4, overlap 0.5), softmax; mapped back
    to the input grid with the same version's Invertd(nearest_interp=False)."""
    from monai.inferers import sliding_window_inference
    from monai.transforms import (
        Compose,
        CropForegroundd,
        Invertd,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
        ToTensord,
    )

    pre = Compose([
        Orientationd(keys=["image"], axcodes="RAS"),
        Spacingd(keys=["image"], pixdim=(1.5, 1.5, 2.0), mode="bilinear"),
        ScaleIntensityRanged(keys=["image"], a_min=-175.0, a_max=250.0, b_min=0.0, b_max=1.0, clip=True),
        CropForegroundd(keys=["image"], source_key="image"),
        ToTensord(keys=["image"]),
    ])
    d = pre({"image": image[None].copy(), "image_meta_dict": _meta(image, affine)})
    crop = [np.asarray(d["foreground_start_coord"]).tolist(), np.asarray(d["foreground_end_coord"]).tolist()]
    with torch.no_grad():
        logits = sliding_window_inference(d["image"][None], (96, 96, 96), 4, net, overlap=0.5)
    d["pred"] = torch.softmax(logits, 1)[0]
    d["pred_meta_dict"] = dict(d["image_meta_dict"])
    inv = Invertd(keys="pred", transform=pre, orig_keys="image", meta_keys="pred_meta_dict",
                  orig_meta_keys="image_meta_dict", nearest_interp=False, to_tensor=True)
    d = inv(d)
    return np.asarray(d["pred"].numpy(), dtype=np.float32), tuple(d["image"].shape[1:]), crop


def run_research_brats(net, image, affine, resample: bool):
    """BRATS21 test_transform (0.9.0): NormalizeIntensityd(nonzero, channel_wise); sliding_window_inference
    (roi 128, sw_batch 1, overlap 0.6); sigmoid. With ``resample`` the card's extension follows the
    normalisation (statistics on the stored voxels, as upstream), as MONAI 0.9.0 transforms: Orientationd(LPS),
    Spacingd(1 mm), and Invertd(nearest_interp=False) back."""
    from monai.inferers import sliding_window_inference
    from monai.transforms import Compose, Invertd, NormalizeIntensityd, Orientationd, Spacingd, ToTensord

    steps = [NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True)]
    if resample:
        steps += [Orientationd(keys="image", axcodes="LPS"), Spacingd(keys="image", pixdim=(1.0, 1.0, 1.0),
                                                                       mode="bilinear")]
    steps += [ToTensord(keys="image")]
    pre = Compose(steps)
    d = pre({"image": image.copy(), "image_meta_dict": _meta(image, affine)})
    with torch.no_grad():
        logits = sliding_window_inference(d["image"][None], roi_size=[128, 128, 128], sw_batch_size=1,
                                          predictor=net, overlap=0.6)
    prob = torch.sigmoid(logits)[0]
    grid = tuple(prob.shape[1:])
    if resample:
        d["pred"] = prob
        d["pred_meta_dict"] = dict(d["image_meta_dict"])
        inv = Invertd(keys="pred", transform=pre, orig_keys="image", meta_keys="pred_meta_dict",
                      orig_meta_keys="image_meta_dict", nearest_interp=False, to_tensor=True)
        prob = inv(d)["pred"]
    return np.asarray(prob.numpy(), dtype=np.float32), grid, None


def labels_from(card: str, prob: np.ndarray) -> np.ndarray:
    """Upstream decision: argmax (softmax cards) or test.py's painting WT->2, TC->1, ET->4 (BraTS)."""
    if card != "swin-unetr-brats21":
        return prob.argmax(0).astype(np.uint8)
    seg = (prob > 0.5).astype(np.int8)
    out = np.zeros(prob.shape[1:], np.uint8)
    out[seg[1] == 1] = 2
    out[seg[0] == 1] = 1
    out[seg[2] == 1] = 4
    return out


def tie_gap(card: str, prob: np.ndarray) -> np.ndarray:
    """Per voxel, how far the upstream decision was from a tie (probability units)."""
    if card == "swin-unetr-brats21":
        gap = np.abs(prob - 0.5).min(0)
    else:  # voxels outside UNETR's foreground crop have all-zero probabilities upstream: not a tie
        top2 = np.sort(prob, axis=0)[-2:]
        gap = np.where(prob.sum(0) > 0.5, top2[1] - top2[0], 1.0)
    return gap


def main() -> None:
    card, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    spec = CARDS[card]
    import monai

    assert monai.__version__ == spec["monai"], (monai.__version__, spec["monai"])
    torch.manual_seed(0)
    real = build(card, spec["real"])
    (out / f"manifest-{card}.json").write_text(json.dumps({
        "card": card, "monai": monai.__version__, "torch": torch.__version__, "sizes": spec["real"],
        "source": spec["source"], "layout": spec["layout"], **manifest(real)}, indent=1) + "\n")
    del real

    sizes = {**spec["real"], **spec["reduced"]}
    net = build(card, sizes).eval()
    sd = seed_weights(net, spec["out_gain"])
    ckpt = save_upstream(card, sd, out)
    record = {
        "card": card, "monai": monai.__version__, "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "source": spec["source"], "layout": spec["layout"],
        "seed": SEED, "out_gain": spec["out_gain"], "architecture_kwargs": sizes,
        "checkpoint": {"name": ckpt.name, "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
                       "bytes": ckpt.stat().st_size},
        "state_dict": [[k, list(v.shape), str(v.dtype).replace("torch.", ""), gd.sha256(v.numpy())]
                       for k, v in sd.items()],
        "cases": {},
    }
    arrays = {}
    for name, case in spec["cases"].items():
        shape = tuple(case["shape"])
        affine = affine_for(case["signs"], case["spacing"], shape)
        if card == "swin-unetr-brats21":
            image = gd.mr_phantom(shape, affine)
            prob, grid, crop = run_research_brats(net, image, affine, resample=(name != "card-grid"))
        else:
            image = gd.ct_phantom(shape, affine)
            runner = run_model_zoo_swin if card == "swin-unetr-btcv" else run_research_unetr
            prob, grid, crop = runner(net, image, affine)
        assert prob.shape[1:] == shape, (prob.shape, shape)
        labels = labels_from(card, prob)
        idx = gd.sample_indices(shape, N_SAMPLES)
        arrays[f"{name}/labels"] = labels
        arrays[f"{name}/sample_index"] = idx
        arrays[f"{name}/sample_prob"] = prob.reshape(len(prob), -1)[:, idx]
        gap = tie_gap(card, prob)
        # voxels whose upstream label a probability change within the tests' tolerance could flip
        arrays[f"{name}/near_tie_index"] = np.flatnonzero(gap.ravel() < TIE_TOLERANCE).astype(np.int64)
        record["cases"][name] = {
            "shape": list(shape), "affine": affine.tolist(), "input_sha256": gd.sha256(image),
            "model_grid": list(grid), "crop": crop, "label_counts": np.bincount(labels.ravel()).tolist(),
            "min_tie_gap": float(gap.min()), "near_tie_voxels": int((gap < TIE_TOLERANCE).sum()),
        }
        sys.stdout.write(f"{card} {name}: model grid {grid}, labels {record['cases'][name]['label_counts']}\n")
    np.savez_compressed(out / f"golden-{card}.npz", **arrays)
    (out / f"golden-{card}.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
