"""Preprocessing to the model grid, as the card's upstream pipeline does it, and its exact inverse.

Steps, in the card's order (``preprocessing.order``):

* ``resample-first`` (MONAI model-zoo / research pipelines: ``Orientationd`` -> ``Spacingd`` -> intensity ->
  optional ``CropForegroundd``) or ``intensity-first`` (normalise the input, then re-orient and resample);
* orientation: the voxel axes are permuted/flipped to the card's axis codes (exact index operations, as MONAI
  ``Orientation`` does for the closest axis codes); the data is never rotated, so oblique volumes keep their
  direction matrix;
* spacing: the grid of MONAI ``Spacingd`` (first voxel centre kept, shape rounded; :mod:`.resample`);
* ``crop_foreground``: crop to the bounding box of voxels > 0 after normalisation (MONAI ``CropForegroundd``
  with its defaults), as the UNETR research pipeline does before its sliding windows.

The inverse maps model-grid outputs back: pad the crop with zeros (as MONAI ``Invertd`` of ``CropForegroundd``:
outside the crop the model gives no probability to any class, so the label there is background), sample the
model grid at the input voxel centres (MONAI ``Invertd`` of ``Spacingd``, linear, border), then
un-flip/un-permute; every output lands exactly on the input grid. Hand-written rather than MONAI transforms
on purpose: those resample in world space with full sampling grids and round-trip MetaTensor affines
(MONAI#7371, #3914); the golden tests (``Testing/golden``) check that the numbers are MONAI's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nibabel.orientations as nio
import numpy as np
import torch

from ..errors import InvalidVolumeError
from .intensity import normalise_intensity
from .resample import inverse_steps, resample, spacing_grid
from .volume import Volume, spacing_of

__all__ = ["MIN_VOXELS_PER_AXIS", "ORDERS", "Prepared", "check_volume", "normalise_intensity", "prepare"]

#: smallest number of voxels along any input axis that the engine accepts
MIN_VOXELS_PER_AXIS = 8
#: ``preprocessing.order`` values
ORDERS = ("intensity-first", "resample-first")


@dataclass
class Prepared:
    """A volume on the model grid plus what is needed to map outputs back.

    Attributes:
        tensor: (1, C, D, H, W) float32 on the model grid (after the crop, if any).
        ornt: nibabel orientation transform applied (input axes -> model axes).
        input_shape: spatial shape of the input.
        oriented_shape: spatial shape after re-orientation, before resampling.
        model_affine: IJK->RAS affine of the (uncropped) model grid.
        constant: True when the (normalised) input has no contrast at all.
        steps: input voxels per model voxel along each oriented axis (1.0: not resampled).
        resampled_shape: spatial shape of the model grid before the crop.
        crop: ``(start, end)`` voxel indices of the foreground crop on the model grid, or None.
        foreground: (I, J, K) bool z-score foreground of the input (channels OR-ed), kept when ``prepare``
            was asked to and normalised a ``nonzero`` z-score on the input grid; else None.
    """

    tensor: torch.Tensor
    ornt: np.ndarray
    input_shape: tuple[int, int, int]
    oriented_shape: tuple[int, int, int]
    model_affine: np.ndarray
    constant: bool = False
    steps: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resampled_shape: tuple[int, int, int] | None = None
    crop: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
    foreground: np.ndarray | None = None

    def uncrop(self, t: torch.Tensor, fill: Sequence[float] | float = 0.0) -> torch.Tensor:
        """(N, D, H, W) on the cropped grid -> the full model grid, channel n outside the crop = fill[n]."""
        if self.crop is None:
            return t
        start, end = self.crop
        fills = [float(fill)] * t.shape[0] if isinstance(fill, (int, float)) else [float(f) for f in fill]
        full = torch.empty((t.shape[0], *self.resampled_shape), dtype=t.dtype, device=t.device)
        for channel, value in enumerate(fills):
            full[channel].fill_(value)
        full[:, start[0]:end[0], start[1]:end[1], start[2]:end[2]] = t
        return full

    def to_oriented(self, t: torch.Tensor, fill: Sequence[float] | float = 0.0) -> torch.Tensor:
        """(N, D, H, W) model-grid tensor -> (N, *oriented_shape): uncrop, then sample at the input voxels."""
        t = self.uncrop(t.float(), fill)
        if tuple(t.shape[1:]) == tuple(self.oriented_shape) and self.steps == (1.0, 1.0, 1.0):
            return t
        return resample(t, self.oriented_shape, inverse_steps(self.steps))

    def to_input_grid(self, t: torch.Tensor, fill: Sequence[float] | float = 0.0) -> torch.Tensor:
        """Map a (N, D, H, W) tensor on the model grid back onto the input grid -> (N, I, J, K) on the CPU."""
        array = self.to_oriented(t, fill).cpu().numpy()
        return torch.from_numpy(np.ascontiguousarray(_apply_ornt(array, _invert_ornt(self.ornt))))


def _apply_ornt(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Apply a nibabel orientation transform to the spatial axes of a (N, I, J, K) array."""
    out = np.stack([nio.apply_orientation(a, ornt) for a in array]) if len(array) else array
    return out


def orient_tensor(t: torch.Tensor, ornt: np.ndarray) -> torch.Tensor:
    """``nibabel.orientations.apply_orientation`` on the last three axes of a tensor (any device).

    Flips and a permutation only. The permutation is a view; ``torch.flip`` copies the tensor (torch has no
    negative strides), so ``prepare`` folds the flips into its resampling instead.
    """
    offset = t.dim() - 3
    flips = [offset + axis for axis, flip in enumerate(ornt[:, 1]) if flip == -1]
    if flips:
        t = t.flip(flips)
    return t.permute(list(range(offset)) + [offset + int(a) for a in np.argsort(ornt[:, 0])])


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


def _foreground_box(tensor: torch.Tensor):
    """(start, end) of the voxels > 0 in any channel of (1, C, D, H, W), as MONAI ``CropForegroundd``; None
    when there is no such voxel (nothing is cropped then)."""
    mask = (tensor[0] > 0).any(0)
    if not bool(mask.any()):
        return None
    start, end = [], []
    for axis in range(3):
        hits = torch.nonzero(mask.any(dim=tuple(a for a in range(3) if a != axis))).flatten()
        start.append(int(hits[0]))
        end.append(int(hits[-1]) + 1)
    return tuple(start), tuple(end)


def prepare(volume: Volume, orientation: str | None, spacing, intensity: dict, *,
            order: str = "intensity-first", crop_foreground: bool = False, device=None,
            keep_foreground: bool = False) -> Prepared:
    """Normalise intensities, re-orient and resample ``volume`` onto the model grid (module docstring).

    ``device``: where the re-orientation and resampling run and the model-grid tensor lives (GPU-resident on
    CUDA); intensity normalisation stays in numpy on the CPU. ``keep_foreground``: keep the input-grid z-score
    foreground in ``Prepared.foreground`` (the maps' body mask; computing it again cost 2.9 s on a CT).
    """
    if order not in ORDERS:
        raise ValueError(f"unknown preprocessing order {order!r}; use one of {ORDERS}")
    data, constant, masks = volume.data, False, []
    if order == "intensity-first":
        data, constant = normalise_intensity(data, intensity, masks if keep_foreground else None)
    foreground = None
    for mask in masks:  # OR-ed in place into the first channel's mask
        foreground = mask if foreground is None else np.logical_or(foreground, mask, out=foreground)
    del masks
    if orientation:  # input axes -> the card's axis codes (closest match; no rotation)
        ornt = nio.ornt_transform(nio.io_orientation(volume.affine), nio.axcodes2ornt(tuple(orientation)))
    else:
        ornt = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    # same voxels as nibabel's apply_orientation: the permutation is a torch view; the flips (torch.flip copies
    # the whole volume) are folded into the resampling's indices, or applied at the end of an axis left alone
    perm = [int(a) for a in np.argsort(ornt[:, 0])]
    flips = [axis for axis in range(3) if ornt[perm[axis], 1] == -1]
    base = torch.from_numpy(np.asarray(data, dtype=np.float32)).to(device or "cpu")
    tensor = base.permute([0] + [1 + a for a in perm])[None]
    affine = volume.affine @ nio.inv_ornt_aff(ornt, volume.shape)
    oriented_shape = tuple(int(s) for s in tensor.shape[2:])
    sizes, steps = oriented_shape, (1.0, 1.0, 1.0)
    if spacing is not None:
        sizes, steps = spacing_grid(oriented_shape, spacing_of(affine), spacing)
        # new voxel n sits at old index n * step: the first voxel centre is kept (MONAI Spacingd)
        affine = affine @ np.diag([*steps, 1.0])
    tensor = resample(tensor, sizes, steps, flips)
    if order == "resample-first":
        array, constant = normalise_intensity(tensor[0].cpu().numpy(), intensity)
        tensor = torch.from_numpy(array)[None].to(device or "cpu")
    resampled_shape = tuple(int(s) for s in tensor.shape[2:])
    box = _foreground_box(tensor) if crop_foreground else None
    if box is not None:
        (a, b, c), (d, e, f) = box
        tensor = tensor[:, :, a:d, b:e, c:f].contiguous()
    return Prepared(tensor.float().contiguous(), ornt, volume.shape, oriented_shape, affine, constant, tuple(steps),
                    resampled_shape, box, foreground)
