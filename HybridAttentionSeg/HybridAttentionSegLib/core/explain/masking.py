"""Where an attention map means something: the body (the imaged object) inside the field of view.

Outside the body the network sees padding or air; what its attention or gradients do there is an artefact of
convolution padding and of how sliding windows are stitched (e.g. a window-grid pattern of the gates), not an
explanation. Maps are set to 0 there. The rule follows the card's intensity normalisation, i.e. what the
model itself treats as background:

* ``zscore`` with ``nonzero``: the z-score's own foreground in any channel (``inference.intensity.foreground``:
  non-zero voxels on a clean background, above the noise on a noisy one; skull-stripped MR: the brain);
* ``window`` (CT): voxels above the window's lower bound (air and lung below it are outside);
* ``percentile`` / ``none``: voxels above the volume's minimum (padding outside the field of view);

no dilation (the boundary voxels themselves are kept; a dilation would cost an input-sized float copy).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def dilate(mask: np.ndarray, voxels: int) -> np.ndarray:
    """Binary dilation of an (I, J, K) mask by a (2v+1)^3 cube (max-pooling; exact for cubes)."""
    if voxels <= 0:
        return mask.astype(bool)
    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    size = 2 * voxels + 1
    return F.max_pool3d(tensor, size, stride=1, padding=voxels)[0, 0].numpy() > 0.5


def body_mask(data: np.ndarray, intensity: dict, dilation: int = 0, foreground: np.ndarray | None = None
              ) -> np.ndarray:
    """(I, J, K) bool mask of the body for a (C, I, J, K) input under the card's ``intensity`` rule.

    ``foreground``: the z-score foreground of ``data`` already computed while normalising it
    (``Prepared.foreground``, channels OR-ed); used as is for a ``nonzero`` z-score card.
    """
    data = np.asarray(data)
    method = (intensity or {}).get("method", "none")
    if method == "zscore" and intensity.get("nonzero", False) and foreground is not None:
        mask = foreground
    elif method == "zscore" and intensity.get("nonzero", False):
        from ..inference.intensity import foreground as channel_foreground  # the z-score's own foreground

        mask = channel_foreground(data[0])  # bool on the input grid; channels OR-ed in place (no stacked copy)
        for channel in data[1:]:
            mask |= channel_foreground(channel)
    elif method == "window":
        mask = np.any(data > float(intensity["window"][0]), axis=0)
    else:
        floor = data.reshape(data.shape[0], -1).min(axis=1)
        mask = np.any(data > floor[:, None, None, None], axis=0)
    if not mask.any():
        return np.ones(data.shape[1:], dtype=bool)
    return dilate(mask, dilation)


def mask_outside(volume: np.ndarray, body: np.ndarray | None) -> np.ndarray:
    """Zero a [0, 1] map outside ``body`` (in place) and rescale it to [0, 1] again (robust max inside)."""
    if body is None or body.all():
        return volume
    from ..inference.inverse import normalise_map_inplace

    # the map is finite and >= 0 here: multiplying by the mask zeroes the outside like volume[~body] = 0, 10x
    # faster (no inverted mask, no boolean indexing: 1.1 s per map on a 512x512x300 CT)
    np.multiply(volume, body, out=volume)
    return normalise_map_inplace(volume)
