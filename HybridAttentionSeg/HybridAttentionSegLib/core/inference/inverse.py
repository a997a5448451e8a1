"""Model-grid outputs back onto the input grid, lean: no full-size per-class copies, on the outputs' device.

:meth:`~.preprocess.Prepared.to_input_grid` resizes all N probability channels at once and re-orients them in
numpy: N float32 copies of the input size, twice (3 classes at 512x512x300: 0.9 GB each), although most runs
only need the labels. Here the labels are decided **one class at a time** (running maximum for softmax,
threshold painting for sigmoid cards), so at most two input-sized float32 arrays exist at once, and the
orientation inverse is applied with torch views on the uint8 labels. Everything stays on the tensor's device
until the final copy to the CPU (GPU-resident on CUDA).

The labels are the ones ``decide(card, prepared.to_input_grid(probabilities))`` gives: the resize is per channel
either way, and the running maximum with a strict ``>`` keeps the first maximal channel like ``argmax``.
"""

from __future__ import annotations

import numpy as np
import torch

from .preprocess import Prepared, _invert_ornt, orient_tensor


def resize(prepared: Prepared, t: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """One (D, H, W) model-grid channel -> the oriented input shape (as ``to_input_grid``; ``fill`` outside a
    foreground crop)."""
    return prepared.to_oriented(t[None], fill)[0]


def unorient(prepared: Prepared, t: torch.Tensor) -> torch.Tensor:
    """Undo the orientation transform on the last three axes (torch views: flips, then a permutation)."""
    return orient_tensor(t, _invert_ornt(prepared.ornt))


def labels_on_input_grid(card, prepared: Prepared, probabilities: torch.Tensor) -> np.ndarray:
    """(N, D, H, W) model-grid probabilities -> (I, J, K) uint8 labels on the input grid, class by class."""
    if card.activation == "sigmoid":
        labels = None
        for region in card.output_regions:
            up = resize(prepared, probabilities[region["channel"]])
            if labels is None:
                labels = torch.zeros(up.shape, dtype=torch.uint8, device=up.device)
            labels[up > card.output_threshold] = int(region["label"])
            del up
        if labels is None:
            labels = torch.zeros(prepared.oriented_shape, dtype=torch.uint8, device=probabilities.device)
    else:
        best = resize(prepared, probabilities[0]).clone()
        labels = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
        for channel in range(1, probabilities.shape[0]):
            up = resize(prepared, probabilities[channel])
            better = up > best
            labels[better] = channel
            torch.where(better, up, best, out=best)
            del up, better
        del best
    return unorient(prepared, labels).contiguous().cpu().numpy()


def map_on_input_grid(prepared: Prepared, t: torch.Tensor) -> np.ndarray:
    """One (D, H, W) model-grid map -> float32 (I, J, K) on the input grid, normalised to [0, 1] in place."""
    up = resize(prepared, t)
    array = unorient(prepared, up).contiguous().cpu().numpy()
    del up
    return normalise_map_inplace(array)


def normalise_map_inplace(volume: np.ndarray) -> np.ndarray:
    """Same values as ``engine.normalise_map`` (min-shift, robust max = 99.9th percentile), without copies.

    ``volume`` must be a float32 array the caller owns; it is overwritten and returned.
    """
    np.nan_to_num(volume, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    volume -= float(volume.min()) if volume.size else 0.0
    np.maximum(volume, 0.0, out=volume)
    top = float(np.percentile(volume, 99.9)) if volume.size else 0.0
    if top <= 0:
        top = float(volume.max()) if volume.size else 0.0
    if top <= 0:
        volume[...] = 0.0
        return volume
    volume /= top
    np.clip(volume, 0.0, 1.0, out=volume)
    return volume
