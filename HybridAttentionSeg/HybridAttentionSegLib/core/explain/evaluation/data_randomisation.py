"""Sanity: data (label) randomisation (Adebayo et al., NeurIPS 2018), in a short version that fits on a CPU.

Two copies of the card's architecture are trained from the same seed on the same image batches of the demo
task (the MNI152 template's training region, ``core.data.sampling.TissueBatches``) for ``steps`` steps: one
with the true labels, one with each patch's labels **permuted voxel by voxel** (class frequencies kept, the
link between image and label gone). Every evaluated map is computed with both copies on the evaluation case,
and their Spearman rank correlation over the region is reported. A map that explains what a model learned from
its labels differs between the two (low ρ); a map that stays the same shows the image or the architecture.

The paper trains both models to convergence (about 30 CPU minutes per demo model here, twice); this version
trains each for ``Protocol.data_randomisation_steps`` steps (minutes) and reports the held-out Dice each copy
reached, so a reader can see that the true-label copy learned the task and the permuted one did not. Only for
cards whose labels are the demo task's (grey and white matter); other models are reported as not run. The
result is reported next to the verdict, not part of it (the verdict is the issue's target: deletion,
insertion and full parameter randomisation).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from ...inference.engine import Segmenter
from .sanity import spearman

logger = logging.getLogger(__name__)


class PermutedLabels:
    """A batch source whose labels are shuffled voxel by voxel within each patch (seeded); images unchanged."""

    def __init__(self, source, seed: int):
        self.source = source
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.source.batch(size)
        flat = labels.reshape(labels.shape[0], -1)
        shuffled = torch.stack([row[torch.from_numpy(self.rng.permutation(row.numel()))] for row in flat])
        return images, shuffled.reshape(labels.shape)


def demo_task_card(card) -> bool:
    """True when the card's labels are the demo task's tissue labels (its training data can be drawn)."""
    from ...data import mni

    return ({int(lab["value"]): lab["name"].lower() for lab in card.labels}
            == {int(lab["value"]): lab["name"].lower() for lab in mni.TISSUE_LABELS})


def train_pair(card, steps: int, seed: int, permute: bool = True) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """Train the true-label and the permuted-label copy (``permute=False``: the same labels twice, a control)."""
    from ...data.sampling import TissueBatches
    from ...training.trainer import TrainConfig, train_model

    training = card.data.get("training") or {}

    def train(permuted: bool) -> tuple[torch.nn.Module, dict]:
        batches = TissueBatches(card.roi_size, card.intensity, seed, augment=False)  # plain patches: faster
        config = TrainConfig(architecture=card.architecture, model_id=f"{card.id}-data-randomisation",
                             kwargs=card.architecture_kwargs, steps=steps, patch=tuple(card.roi_size),
                             batch_size=int(training.get("batch_size", 2)), lr=float(training.get("lr", 2e-3)),
                             warmup=min(50, max(1, steps // 4)), seed=seed, data="template", progress=False,
                             batches=PermutedLabels(batches, seed) if permuted else batches,
                             in_channels=card.in_channels, out_channels=card.out_channels)
        return train_model(config)

    t0 = time.perf_counter()
    true_model, true_info = train(False)
    other_model, other_info = train(permute)
    info = {"steps": steps, "seed": seed, "labels": "permuted voxel by voxel within each patch" if permute
            else "true (control)", "train_s": round(time.perf_counter() - t0, 1),
            "final_loss_true": round(float(np.mean(true_info["loss_history"][-10:])), 4),
            "final_loss_permuted": round(float(np.mean(other_info["loss_history"][-10:])), 4)}
    return true_model, other_model, info


def _dice(labelmap: np.ndarray, reference: np.ndarray | None, region: np.ndarray, values) -> dict | None:
    if reference is None:
        return None
    out = {}
    for value in values:
        p, r = (labelmap == value) & region, (reference == value) & region
        total = int(p.sum()) + int(r.sum())
        out[int(value)] = round(1.0 if total == 0 else 2.0 * int((p & r).sum()) / total, 3)
    return out


def data_randomisation(evaluation, items: list[dict], steps: int, seed: int = 0, permute: bool = True) -> dict:
    """Add ``randomisation.data_randomisation`` to every evaluated ``items`` entry; return the run's summary."""
    card, case = evaluation.card, evaluation.case
    if not demo_task_card(card):
        summary = {"run": False, "reason": "needs the demo task's training data (grey/white matter labels)"}
        for item in items:
            item["randomisation"]["data_randomisation"] = dict(summary)
        return summary
    true_model, other_model, info = train_pair(card, steps, seed, permute)
    segmenters = [Segmenter(evaluation.eval_card, device="cpu", model=m.eval(), fast_path="off")
                  for m in (true_model, other_model)]
    values = [int(lab["value"]) for lab in card.labels]
    dice = [_dice(s.run(case.volume, keep_probabilities=False).labelmap, case.reference, case.region, values)
            for s in segmenters]
    summary = {"run": True, **info,
               "heldout_dice_true": {card.label_name(v): d for v, d in (dice[0] or {}).items()},
               "heldout_dice_permuted": {card.label_name(v): d for v, d in (dice[1] or {}).items()}}
    for item in items:
        target = card.label_index(item["class"]) if item["class"] else None
        maps = [evaluation.map_of(item["method"], target, s) for s in segmenters]
        rho = spearman(maps[0][case.region], maps[1][case.region])
        item["randomisation"]["data_randomisation"] = {"spearman": round(rho, 4), "steps": steps,
                                                       "labels": info["labels"]}
        logger.info("data randomisation %s%s: rho %.3f", item["method"],
                    f" ({item['class']})" if item["class"] else "", rho)
    return summary
