"""Preprocessing to the model grid and its exact inverse.

Orientation and spacing are changed *in voxel space only*: the voxel axes are permuted/flipped to the
card's orientation (exact index operations) and resampled along those axes to the target spacing. The data
is never rotated, so oblique volumes keep their direction matrix and the inverse is exact: outputs are
resampled back along the same axes with the same voxel-centre convention, then un-flipped/un-permuted.

This is hand-written (not MONAI ``Orientation``/``Spacing``/``Invertd``) on purpose: those resample in world
space, which rotates oblique grids and round-trips through MetaTensor affines (MONAI#7371, #3914); here the
round trip is index arithmetic plus one trilinear resize each way, and tests check centroid accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel.orientations as nio
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidVolumeError
from .volume import Volume, spacing_of

#: smallest number of voxels along any input axis that the engine accepts
MIN_VOXELS_PER_AXIS = 8


@dataclass
class Prepared:
    """A volume on the model grid plus what is needed to map outputs back.

    Attributes:
        tensor: (1, C, D, H, W) float32 on the model grid.
        ornt: nibabel orientation transform applied (input axes -> model axes).
        input_shape: spatial shape of the input.
        oriented_shape: spatial shape after re-orientation, before resampling.
        model_affine: IJK->RAS affine of the model grid.
        constant: True when the (normalised) input has no contrast at all.
    """

    tensor: torch.Tensor
    ornt: np.ndarray
    input_shape: tuple[int, int, int]
    oriented_shape: tuple[int, int, int]
    model_affine: np.ndarray
    constant: bool = False

    def to_input_grid(self, t: torch.Tensor, mode: str = "trilinear") -> torch.Tensor:
        """Map a (N, D, H, W) tensor on the model grid back onto the input grid -> (N, I, J, K)."""
        t = t.float()
        if tuple(t.shape[1:]) != self.oriented_shape:
            t = F.interpolate(t[None], size=self.oriented_shape, mode=mode,
                              **({"align_corners": False} if mode != "nearest" else {}))[0]
        array = t.cpu().numpy()
        inverse = _invert_ornt(self.ornt)
        return torch.from_numpy(np.ascontiguousarray(_apply_ornt(array, inverse)))


def _apply_ornt(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Apply a nibabel orientation transform to the spatial axes of a (N, I, J, K) array."""
    out = np.stack([nio.apply_orientation(a, ornt) for a in array]) if len(array) else array
    return out


def _invert_ornt(ornt: np.ndarray) -> np.ndarray:
    """Orientation transform that undoes ``ornt``."""
    inverse = np.zeros_like(ornt)
    for src_axis, (dst_axis, flip) in enumerate(ornt):
        inverse[int(dst_axis)] = (src_axis, flip)
    return inverse


def check_volume(volume: Volume, in_channels: int) -> None:
    """Raise :class:`InvalidVolumeError` for inputs the engine must refuse."""
    if volume.channels != in_channels:
        kind = "4D/vector data" if volume.channels > 1 else "a single-channel volume"
        message = (f"model expects {in_channels} channel(s) of scalar data; got {kind} with {volume.channels} "
                   f"channel(s); pick a matching model or extract the channel(s) it needs")
        raise InvalidVolumeError(message)
    thin = [s for s in volume.shape if s < MIN_VOXELS_PER_AXIS]
    if thin:
        message = (f"needs a 3D volume with at least {MIN_VOXELS_PER_AXIS} voxels along every axis; got shape "
                   f"{volume.shape}; load the whole series rather than a single slice or thin slab")
        raise InvalidVolumeError(message)
    bad = int(np.count_nonzero(~np.isfinite(volume.data)))
    if bad:
        message = (f"volume has {bad} NaN/Inf voxel(s); replace them (e.g. with the background value) "
                   f"before segmenting")
        raise InvalidVolumeError(message)


def normalise_intensity(data: np.ndarray, intensity: dict) -> tuple[np.ndarray, bool]:
    """Apply the card's intensity normalisation to (C, I, J, K) float data. Returns (data, is_constant)."""
    data = data.astype(np.float32, copy=True)
    method = intensity.get("method", "none")
    constant = bool(np.all(data == data.reshape(len(data), -1)[:, :1, None, None]))
    if method == "window":
        lo, hi = intensity["window"]
        data = np.clip((data - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    elif method == "percentile":
        for c in range(len(data)):
            lo, hi = np.percentile(data[c], intensity.get("percentiles", (0.5, 99.5)))
            data[c] = np.clip((data[c] - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    elif method == "zscore":
        nonzero = bool(intensity.get("nonzero", False))
        for c in range(len(data)):
            mask = data[c] != 0 if nonzero else np.ones(data[c].shape, bool)
            values = data[c][mask]
            if values.size < 2 or float(values.std()) == 0.0:
                data[c] = 0.0
                continue
            normalised = (data[c] - values.mean()) / values.std()
            data[c] = np.where(mask, normalised, 0.0) if nonzero else normalised
    return data, constant


def prepare(volume: Volume, orientation: str | None, spacing, intensity: dict) -> Prepared:
    """Normalise intensities, re-orient and resample ``volume`` onto the model grid."""
    data, constant = normalise_intensity(volume.data, intensity)
    if orientation:  # input axes -> the card's axis codes (closest match; no rotation)
        ornt = nio.ornt_transform(nio.io_orientation(volume.affine), nio.axcodes2ornt(tuple(orientation)))
    else:
        ornt = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    oriented = _apply_ornt(data, ornt)
    affine = volume.affine @ nio.inv_ornt_aff(ornt, volume.shape)
    oriented_shape = tuple(int(s) for s in oriented.shape[1:])
    tensor = torch.from_numpy(np.ascontiguousarray(oriented))[None]
    if spacing is not None:
        current = spacing_of(affine)
        target = np.asarray(spacing, dtype=np.float64)
        new_shape = tuple(max(1, int(round(s * c / t)))
                          for s, c, t in zip(oriented_shape, current, target, strict=True))
        if new_shape != oriented_shape:
            tensor = F.interpolate(tensor, size=new_shape, mode="trilinear", align_corners=False)
            scale = np.array(oriented_shape, float) / np.array(new_shape, float)
            # voxel centre n of the new grid sits at old continuous index (n + 0.5) * scale - 0.5
            resample = np.eye(4)
            resample[:3, :3] = np.diag(scale)
            resample[:3, 3] = 0.5 * scale - 0.5
            affine = affine @ resample
    return Prepared(tensor.float(), ornt, volume.shape, oriented_shape, affine, constant)
