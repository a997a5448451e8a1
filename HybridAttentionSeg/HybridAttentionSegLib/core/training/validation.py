"""Validation of the brain-tissue demo models (protocol: ``Resources/docs/validation.md``).

Every model runs through the engine (the same ``Segmenter`` users run) on:

* **held-out synthetic subjects**: ``SyntheticSubjects(VALIDATION_SEEDS[:n])`` (generator seeds that training
  never draws; whole brain, including the anatomy of the held-out slab that training never sees; random
  contrast, resolution, bias, noise and background). Dice per class per subject; the mean with a percentile
  bootstrap CI over subjects.
* **the template** (nilearn's MNI152 T1, an image no model was trained on) at 2 mm and at 1 mm (the engine
  resamples to the model's 2 mm grid and back), Dice per class over the whole brain; and the **held-out slab**
  (RAS z >= 44 mm) of the 2 mm template. One image each: the CI is a block bootstrap (cubes of 16 mm; the
  true/false positive and false negative counts of each cube are resampled).
* **background agreement**: the first ``agreement_subjects`` held-out subjects drawn again with an exact-zero,
  a near-zero (~1e-17) and a Rayleigh-noise background (same subject otherwise); the share of voxels with the
  same label as the zero-background run, over the voxels that any run or the reference labels as tissue.

All resampling is seeded (``numpy.random.default_rng(seed)``), so a validation run is reproducible.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..data import mni

logger = logging.getLogger(__name__)

#: bootstrap resamples and confidence level
RESAMPLES = 2000
LEVEL = 0.95
#: side of the bootstrap cubes in mm
BLOCK_MM = 16
DEFAULT_SUBJECTS = 20
DEFAULT_AGREEMENT_SUBJECTS = 5


def dice_counts(prediction: np.ndarray, reference: np.ndarray, values, mask: np.ndarray | None = None) -> np.ndarray:
    """(len(values), 3) int64: true positives, false positives, false negatives per label value."""
    if mask is not None:
        prediction, reference = prediction[mask], reference[mask]
    out = np.zeros((len(values), 3), dtype=np.int64)
    for row, value in enumerate(values):
        p, r = prediction == value, reference == value
        tp = int(np.count_nonzero(p & r))
        out[row] = (tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(r)) - tp)
    return out


def dice_from_counts(counts: np.ndarray) -> np.ndarray:
    """Dice from (..., 3) counts (1.0 where prediction and reference are both empty)."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 1.0)


def _interval(samples: np.ndarray) -> list[float]:
    tail = (1.0 - LEVEL) / 2 * 100
    return [round(float(v), 4) for v in np.percentile(samples, [tail, 100 - tail], axis=0)]


def bootstrap_mean_ci(values, seed: int = 0, resamples: int = RESAMPLES) -> tuple[float, list[float]]:
    """Mean of ``values`` and its percentile bootstrap CI (resampling the values with replacement)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(values), np.full(len(values), 1.0 / len(values)), size=resamples)
    means = weights @ values / len(values)
    return round(float(values.mean()), 4), _interval(means)


def block_bootstrap_dice(prediction: np.ndarray, reference: np.ndarray, values, block: int,
                         mask: np.ndarray | None = None, seed: int = 0,
                         resamples: int = RESAMPLES) -> list[tuple[float, list[float]]]:
    """Dice per label value and a block-bootstrap CI: cubes of ``block`` voxels are resampled with replacement.

    Only cubes holding reference or predicted tissue (inside ``mask``) take part.
    """
    shape = prediction.shape
    pad = [(0, -s % block) for s in shape]
    keep = np.ones(shape, bool) if mask is None else mask
    grids = [np.pad(a, pad) for a in (prediction, reference, keep)]
    blocks = [s // block for s in grids[0].shape]

    def per_block(a):
        return a.reshape(blocks[0], block, blocks[1], block, blocks[2], block).sum(axis=(1, 3, 5)).ravel()

    counts = []
    for value in values:
        p, r = (grids[0] == value) & grids[2], (grids[1] == value) & grids[2]
        tp = per_block(p & r)
        counts.append(np.stack([tp, per_block(p) - tp, per_block(r) - tp], axis=-1))
    counts = np.stack(counts, axis=1)  # (n_blocks, n_values, 3)
    used = counts.reshape(len(counts), -1).any(axis=1)
    counts = counts[used]
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(counts), np.full(len(counts), 1.0 / len(counts)), size=resamples)
    resampled = np.einsum("bn,nvc->bvc", weights, counts)
    point = dice_from_counts(counts.sum(axis=0))
    spread = dice_from_counts(resampled)
    return [(round(float(point[v]), 4), _interval(spread[:, v])) for v in range(len(values))]


def _segment(segmenter, volume) -> np.ndarray:
    return segmenter.run(volume, keep_probabilities=False).labelmap


def _synthetic(segmenter, card, values, subjects: int, agreement_subjects: int, seed: int) -> tuple[dict, dict]:
    from ..data.synth import BACKGROUNDS, VALIDATION_SEEDS, SyntheticSubjects

    generator = SyntheticSubjects(VALIDATION_SEEDS[:subjects])
    scores, agreement = [], {kind: [] for kind in BACKGROUNDS[1:]}
    for index, subject_seed in enumerate(generator.seeds):
        image, labels, _ = generator.subject(subject_seed)
        prediction = _segment(segmenter, image)
        scores.append(dice_from_counts(dice_counts(prediction, labels, values)))
        if index < agreement_subjects:
            zero = _segment(segmenter, generator.subject(subject_seed, background="zero")[0])
            for kind in agreement:
                other = _segment(segmenter, generator.subject(subject_seed, background=kind)[0])
                region = (labels > 0) | (zero > 0) | (other > 0)
                agreement[kind].append(float(np.mean(zero[region] == other[region])))
    scores = np.array(scores)  # (subjects, values)
    out = {}
    for column, value in enumerate(values):
        mean, ci = bootstrap_mean_ci(scores[:, column], seed=seed)
        out[card.label_name(value)] = {"dice": mean, "ci": ci, "min": round(float(scores[:, column].min()), 4)}
    out["subjects"] = len(scores)
    out["seeds"] = [generator.seeds[0], generator.seeds[-1]]
    worst = {kind: round(min(v), 5) for kind, v in agreement.items() if v}
    return out, {"worst_agreement": worst, "subjects": min(agreement_subjects, len(scores))}


def _template(segmenter, card, values, resolution: int, seed: int) -> tuple[dict, dict]:
    """Whole-brain and held-out-slab scores of one run on the template."""
    volume = mni.load_template(resolution)
    reference = mni.tissue_labels(resolution)
    prediction = _segment(segmenter, volume)
    block = BLOCK_MM // resolution
    out = []
    for mask in (None, mni.heldout_mask(volume.shape, resolution)):
        results = block_bootstrap_dice(prediction, reference, values, block, mask, seed)
        out.append({card.label_name(v): {"dice": d, "ci": ci} for v, (d, ci) in zip(values, results, strict=True)})
    return out[0], out[1]


def validate_model(card, model=None, device: str = "cpu", subjects: int = DEFAULT_SUBJECTS,
                   agreement_subjects: int = DEFAULT_AGREEMENT_SUBJECTS, seed: int = 0) -> dict:
    """Run the whole protocol for ``card`` (optionally with an in-memory ``model``) and return the numbers."""
    from ..inference.engine import Segmenter

    t0 = time.perf_counter()
    segmenter = Segmenter(card, device=device, model=model)
    values = [label["value"] for label in card.labels]
    synthetic, background = _synthetic(segmenter, card, values, subjects, agreement_subjects, seed)
    template_2mm, slab_2mm = _template(segmenter, card, values, 2, seed)
    template_1mm, _ = _template(segmenter, card, values, 1, seed)
    result = {"model": card.id, "synthetic": synthetic, "template_2mm": template_2mm,
              "template_1mm": template_1mm, "slab_2mm": slab_2mm, "background": background}
    choice = getattr(segmenter, "path_choice", None)
    result["inference_path"] = choice.name if choice is not None else "torch fp32"
    result["time_s"] = round(time.perf_counter() - t0, 1)
    logger.info("validated %s in %.0f s", card.id, result["time_s"])
    return result


#: card metric name and description of each part of the protocol
METRIC_PARTS = {
    "synthetic": ("dice_synthetic", "held-out synthetic subjects (core.data.synth VALIDATION_SEEDS {seeds}, "
                                    "{subjects} subjects, whole brain), mean over subjects, 95% bootstrap CI"),
    "template_2mm": ("dice_template_2mm", "MNI152 template at 2 mm, whole brain, 95% block-bootstrap CI"),
    "template_1mm": ("dice_template_1mm", "MNI152 template at 1 mm, whole brain, 95% block-bootstrap CI"),
    "slab_2mm": ("dice", "held-out axial slab (RAS z >= 44 mm) of the 2 mm MNI152 template, "
                         "95% block-bootstrap CI"),
}


def card_metrics(result: dict, where: str) -> list[dict]:
    """Model-card ``metrics`` entries for a :func:`validate_model` result (``where``: device and date)."""
    metrics = []
    for part, (name, text) in METRIC_PARTS.items():
        scores = result[part]
        source = text.format(seeds=scores.get("seeds"), subjects=scores.get("subjects"))
        for label, entry in scores.items():
            if isinstance(entry, dict):
                metrics.append({"name": name, "label": label, "value": entry["dice"], "ci": entry["ci"],
                                "source": f"{source}; hybridseg validate ({result['inference_path']}), {where}"})
    for kind, value in result["background"]["worst_agreement"].items():
        metrics.append({"name": "background_agreement", "label": kind, "value": value,
                        "source": f"share of tissue voxels labelled as with an exact-zero background, worst of "
                                  f"{result['background']['subjects']} held-out synthetic subjects; "
                                  f"hybridseg validate, {where}"})
    return metrics
