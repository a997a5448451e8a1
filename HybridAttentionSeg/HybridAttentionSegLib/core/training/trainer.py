"""Seeded, reproducible training of the demo models on the MNI152 tissue task (``hybridseg train``).

One run: seed everything (``monai.utils.set_determinism``, a seeded patch sampler, seeded MONAI transforms),
train the registry's architecture on patches from the training region only (``core.data.sampling``) with
AdamW and Dice + cross-entropy, write ``<id>.safetensors``, then evaluate the held-out slab **through the
engine** (the same ``Segmenter`` the users run) and write ``<id>.json``, a model card with the metrics and a
``training`` block (device, steps, seed, wall time, command line). The final weights are the last step's: the
held-out slab is never used to pick a checkpoint.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import mni

logger = logging.getLogger(__name__)
#: the template as NRRD next to the bundled cards (the in-Slicer self-test loads it without nilearn)
BUNDLED_SAMPLE = "mni152-t1-2mm.nrrd"

INTENSITY = {"method": "zscore", "nonzero": True}
#: batches of BatchNorm recalibration after training (:func:`recalibrate_batchnorm`)
BATCHNORM_BATCHES = 50
MAX_WEIGHTS_BYTES = 10 * 1024 * 1024


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in the card's ``training`` block)."""

    architecture: str
    model_id: str
    kwargs: dict = field(default_factory=dict)
    steps: int = 1000
    patch: tuple[int, int, int] = (64, 64, 48)
    batch_size: int = 2
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    seed: int = 0
    resolution: int = 2
    augment: bool = True
    data: str = "synthetic"
    contrast: str = "t1"
    overlap: float = 0.5
    device: str = "cpu"
    threads: int | None = None
    title: str | None = None
    command: str = ""
    progress: bool = True
    #: another task (``hybridseg experiment``): an object with ``batch(size) -> (images, labels)`` replaces the
    #: MNI152 batches, with its own input channels and classes (background included)
    batches: object | None = None
    in_channels: int = 1
    out_channels: int | None = None


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, values, mask: np.ndarray | None = None) -> dict:
    """Dice of each label value in ``values`` (1.0 when both are empty), optionally inside ``mask``."""
    if mask is not None:
        prediction, reference = prediction[mask], reference[mask]
    scores = {}
    for value in values:
        p, r = prediction == value, reference == value
        denominator = int(p.sum()) + int(r.sum())
        scores[int(value)] = 1.0 if denominator == 0 else 2.0 * int((p & r).sum()) / denominator
    return scores


def evaluate_heldout(card, model: torch.nn.Module | None = None, device: str = "cpu", resolution: int = 2,
                     perturbed: bool = False) -> dict[str, float]:
    """Held-out-slab Dice per label name of ``card``'s model on the template, run through the engine."""
    from ..inference.engine import Segmenter

    volume = mni.perturbed_template(resolution) if perturbed else mni.load_template(resolution)
    result = Segmenter(card, device=device, model=model).run(volume, keep_probabilities=False)
    reference = mni.tissue_labels(resolution)
    mask = mni.heldout_mask(volume.shape, resolution)
    scores = dice_per_class(result.labelmap, reference, [label["value"] for label in card.labels], mask)
    return {card.label_name(value): round(score, 4) for value, score in scores.items()}


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    from ..inference.fastpath import cpu_name

    return f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"


@contextmanager
def torch_settings(threads: int | None):
    """Use ``threads`` CPU threads and deterministic algorithms inside; restore both on exit.

    Tests share the process, and on a busy 2-core machine more threads than free cores make convolutions
    several times slower, so the thread count also applies to the evaluation.
    """
    previous = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if threads:
            torch.set_num_threads(int(threads))
        torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        torch.set_num_threads(previous)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def train_model(config: TrainConfig) -> tuple[torch.nn.Module, dict]:
    """Train and return ``(model, info)``; ``info`` has the loss history, wall time and device name."""
    with torch_settings(config.threads):
        return _train(config)


def _train(config: TrainConfig) -> tuple[torch.nn.Module, dict]:
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism
    from tqdm import tqdm

    from ..inference.engine import resolve_device
    from ..models.registry import get_architecture

    device = resolve_device(config.device)
    spec = get_architecture(config.architecture)
    spec.constraints.check_roi(config.patch)
    set_determinism(seed=config.seed)
    out_channels = config.out_channels or 1 + max(label["value"] for label in mni.TISSUE_LABELS)
    model = spec.build(config.in_channels, out_channels, tuple(config.patch), **config.kwargs).to(device)
    batches = config.batches if config.batches is not None else _batches(config, config.seed)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, config))
    history = []
    start = time.perf_counter()
    model.train()
    with tqdm(total=config.steps, desc=config.model_id, unit="step", file=sys.stderr,
              disable=not config.progress, dynamic_ncols=True) as bar:
        for step in range(config.steps):
            images, labels = batches.batch(config.batch_size)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(images.to(device)), labels.to(device))
            loss.backward()
            optimizer.step()
            scheduler.step()
            history.append(loss.item())
            bar.update(1)
            if step % 10 == 0 or step == config.steps - 1:
                bar.set_postfix(loss=f"{np.mean(history[-10:]):.4f}")
    recalibrated = recalibrate_batchnorm(model, config, device)
    wall = time.perf_counter() - start
    model.eval()
    info = {"batchnorm_recalibration_batches": recalibrated,
            "loss_history": history, "wall_time_s": round(wall, 1), "device": _device_name(device),
            "parameters": int(sum(p.numel() for p in model.parameters()))}
    return model.cpu(), info


def _batches(config: TrainConfig, seed: int):
    from ..data.sampling import MixedBatches, SyntheticBatches, TissueBatches

    if config.data == "synthetic":
        return SyntheticBatches(config.patch, INTENSITY, seed, config.resolution, config.contrast, config.augment)
    if config.data == "mixed":
        return MixedBatches(config.patch, INTENSITY, seed, config.resolution, config.contrast, config.augment)
    return TissueBatches(config.patch, INTENSITY, seed, config.resolution, config.augment)


def recalibrate_batchnorm(model: torch.nn.Module, config: TrainConfig, device=None) -> int:
    """Recompute BatchNorm running statistics over fresh training batches; return how many (0: no BatchNorm).

    The running averages that training leaves (momentum 0.1 over the last steps, while the weights still move)
    did not match the final weights: the Attention U-Net trained on synthetic subjects scored 0.73 Dice on
    held-out subjects with them and 0.88 after this step ("precise BN", Wu & Johnson, arXiv 2105.07576).
    The weights are not changed: min(50, steps) batches from their own seed (``seed + 1_000_003``) go through
    the model in train mode without gradients, with cumulative averaging (``momentum=None``). Only for
    ``data="synthetic"``: the template recipe stays as it was, so its bundled weights stay reproducible.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or config.data != "synthetic" or config.batches is not None:
        return 0
    count = min(BATCHNORM_BATCHES, config.steps)
    batches = _batches(config, config.seed + 1_000_003)
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(count):
            images, _ = batches.batch(config.batch_size)
            model(images.to(device) if device is not None else images)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()
    return count


def save_weights(model: torch.nn.Module, path: Path, metadata: dict) -> dict:
    """Write the state dict as safetensors (temp name, then rename); return the card's ``weights`` block."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    # one metadata key: safetensors writes several in hash-map order, which varies between processes
    save_file(state, str(tmp), metadata={"hybridseg": json.dumps(metadata, sort_keys=True)})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates the file owner-only
    os.replace(tmp, path)
    size = path.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        logger.warning("weights file %s is %.1f MB, over the 10 MB limit for bundled models", path, size / 2**20)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"file": path.name, "sha256": digest, "size_bytes": size, "format": "safetensors"}


def build_card(config: TrainConfig, weights: dict, training: dict, metrics: list | None = None) -> dict:
    """The model card of a trained demo model (``bundled`` is derived when the catalog loads it)."""
    from ..models.registry import get_architecture

    spec = get_architecture(config.architecture)
    title = config.title or f"MNI152 grey/white matter demo ({spec.name})"
    if config.data == "synthetic":
        trained_on = ("Trained only on synthetic subjects drawn from the MNI152 2009 template's tissue maps "
                      "(nilearn; random warps, tissue intensities, resolution, bias field, noise and backgrounds: "
                      "core.data.synth, Resources/docs/demo-data.md), never on the template's image or on the "
                      "held-out slab's anatomy; validated on held-out synthetic subjects and on the template "
                      "(Resources/docs/validation.md).")
    elif config.data == "mixed":
        trained_on = ("Trained on the MNI152 2009 template shipped by nilearn (labels derived from its GM/WM "
                      "probability maps) with intensity, bias-field and deformation augmentation, and, for half of "
                      "the steps, on synthetic subjects drawn from its tissue maps (core.data.synth); never on the "
                      "held-out slab; validated on held-out synthetic subjects and on the template "
                      "(Resources/docs/validation.md).")
    else:
        trained_on = ("Trained only on the MNI152 2009 template shipped by nilearn (labels derived from its GM/WM "
                      "probability maps, see Resources/docs/demo-data.md) with intensity, bias-field and "
                      "deformation augmentation; validated on a held-out axial slab.")
    return {
        "id": config.model_id,
        "title": title,
        "version": "1.0",
        "description": (
            f"Demo model trained by the project ({spec.family}: {spec.description}). Segments grey and white "
            f"matter in skull-stripped T1-weighted brain MRI. {trained_on}"),
        "architecture": {"name": config.architecture, "kwargs": dict(config.kwargs)},
        "input": {"channels": 1, "modalities": ["MR T1w (skull-stripped)"]},
        "labels": [dict(label) for label in mni.TISSUE_LABELS],
        "preprocessing": {"orientation": "RAS", "spacing": [float(config.resolution)] * 3,
                          "intensity": dict(INTENSITY)},
        "inference": {"roi_size": list(config.patch), "overlap": config.overlap, "sw_batch_size": 1},
        "weights": weights,
        "license": ("Apache-2.0 (weights, trained by the HybridAttentionSeg project). Training data: MNI ICBM152 "
                    "2009 template, Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, "
                    "Montreal Neurological Institute, McGill University (permissive licence, notice kept)."),
        "intended_use": ("Demonstration and testing of the extension (attention maps, UI, CLI) on brain T1 "
                         "images. Not a validated tissue classifier; not for clinical or research use."),
        "metrics": metrics or [],
        "training": training,
        "references": [
            "Fonov et al., Unbiased average age-appropriate atlases for pediatric studies, NeuroImage 54 (2011)",
            "nilearn.datasets.load_mni152_template / load_mni152_gm_template / load_mni152_wm_template",
        ],
        "sample_data": {"name": "MNI152 2009 T1 template (nilearn)", "loader": "core.data.mni.load_template",
                        "resolution_mm": config.resolution},
    }


def _metrics(scores: dict, kind: str, source: str) -> list[dict]:
    return [{"name": kind, "label": name, "value": value, "source": source} for name, value in scores.items()]


def run_training(config: TrainConfig, out_dir: Path, overwrite: bool = False) -> dict:
    """Train, write ``<id>.safetensors`` and ``<id>.json`` in ``out_dir``, and return the card dict.

    An existing model ``<id>`` in ``out_dir`` is refused before training unless ``overwrite``. Weights and card
    are written as one unit (:class:`~..outputs.OutputSet`): staged beside ``out_dir``, moved in together
    once both are complete, so an interrupted run leaves the previous pair (or nothing) and never a card
    whose checksum does not match its weights.
    """
    from ..outputs import OutputSet

    names = [f"{config.model_id}.safetensors", f"{config.model_id}.json"]
    outputs = OutputSet(out_dir, config.model_id, names, overwrite=overwrite, option="--out-dir",
                        remedy="pass --overwrite to replace that model or choose another --id")
    outputs.check()
    with torch_settings(config.threads), outputs, outputs.writing():
        data = _run_training(config, outputs.staging, Path(out_dir))
        outputs.commit()
    return data


def _run_training(config: TrainConfig, out_dir: Path, final_dir: Path | None = None) -> dict:
    import monai

    from ..models.cards import ModelCard

    model, info = train_model(config)
    weights = save_weights(model, out_dir / f"{config.model_id}.safetensors",
                           {"id": config.model_id, "architecture": config.architecture,
                            "kwargs": config.kwargs, "seed": config.seed})
    date = datetime.date.today().isoformat()
    template = ("MNI152 2009 T1 template shipped by nilearn, "
                f"{config.resolution} mm; labels and held-out slab: Resources/docs/demo-data.md")
    if config.data in ("synthetic", "mixed"):
        from ..data.synth import TRAINING_SEEDS, ranges_dict

        data = {"source": "core.data.synth.SyntheticSubjects (tissue maps of the MNI152 2009 template shipped by "
                          f"nilearn, {config.resolution} mm; Resources/docs/demo-data.md)",
                "seeds": f"drawn from range({TRAINING_SEEDS.start}, {TRAINING_SEEDS.stop}), one subject per step",
                "region": "train", "contrast": config.contrast, "ranges": ranges_dict()}
        if config.data == "mixed":
            data = {"template": template, "synthetic": data,
                    "mix": "each step: a synthetic subject with probability 0.5, else template patches"}
    else:
        data = template
    training = {
        "data": data,
        "training_region": f"k < {mni.heldout_first_slice(config.resolution)} (RAS z < {mni.HELDOUT_Z_MIN_MM:g} mm)",
        "device": info["device"], "date": date, "steps": config.steps, "batch_size": config.batch_size,
        "patch": list(config.patch), "seed": config.seed, "optimizer": "AdamW",
        "lr": config.lr, "weight_decay": config.weight_decay, "schedule": f"linear warm-up {config.warmup} steps, "
        "cosine to 5%", "loss": "DiceCE (softmax, batch Dice)", "augmentation": config.augment,
        "parameters": info["parameters"], "wall_time_s": info["wall_time_s"],
        "final_loss": round(float(np.mean(info["loss_history"][-20:])), 4),
        "batchnorm_recalibration_batches": info["batchnorm_recalibration_batches"],
        "versions": {"torch": torch.__version__, "monai": monai.__version__, "python": platform.python_version()},
        "command": config.command,
    }
    card_path = out_dir / f"{config.model_id}.json"
    card = ModelCard.from_dict(build_card(config, weights, training), card_path)
    source = (f"held-out axial slab (RAS z >= {mni.HELDOUT_Z_MIN_MM:g} mm) of the {config.resolution} mm MNI152 "
              f"template, computed by hybridseg train through the engine on {info['device']}, {date}")
    t0 = time.perf_counter()
    heldout = evaluate_heldout(card, model=model)
    perturbed = evaluate_heldout(card, model=model, perturbed=True)
    logger.info("held-out Dice %s; perturbed contrast %s (%.1f s)", heldout, perturbed, time.perf_counter() - t0)
    metrics = _metrics(heldout, "dice", source)
    metrics += _metrics(perturbed, "dice_perturbed", source.replace(
        "template,", "template with the fixed contrast perturbation of core.data.mni.perturbed_template,"))
    data = build_card(config, weights, training, metrics)
    if config.resolution == 2 and final_dir is not None and (final_dir / BUNDLED_SAMPLE).is_file():  # bundled
        data["sample_data"] = {"name": "MNI152 2009 T1 template, 2 mm (nilearn; zeroed resampling residue)",
                               "file": BUNDLED_SAMPLE, "loader": "core.data.mni.load_template", "resolution_mm": 2}
    ModelCard.from_dict(data, card_path)  # validate before writing
    tmp = card_path.with_name(card_path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, card_path)
    return data
