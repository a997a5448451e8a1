"""The in-memory volume: voxels plus IJK->RAS geometry.

Axis conventions (the geometry contract):

* ``Volume.data`` is float32 (or any numeric) with shape (C, I, J, K): channel first, then voxel index
  axes in file order (NIfTI/ITK order; Slicer's ``arrayFromVolume`` is (K, J, I) and must be transposed).
* ``Volume.affine`` is a 4x4 matrix mapping homogeneous (i, j, k, 1) to RAS millimetres.
* Every output of the engine is returned on exactly this grid: same shape, same affine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidVolumeError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    """A (C, I, J, K) voxel array with its IJK->RAS affine."""

    data: np.ndarray
    affine: np.ndarray
    name: str = "volume"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            message = f"affine should be 4x4, got {self.affine.shape}"
            raise ValueError(message)
        if self.data.ndim == 3:
            self.data = self.data[None]
        if self.data.ndim != 4:
            message = f"volume data should be (C, I, J, K) or (I, J, K), got shape {self.data.shape}"
            raise ValueError(message)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (I, J, K)."""
        return tuple(int(s) for s in self.data.shape[1:])

    @property
    def channels(self) -> int:
        """Number of channels."""
        return int(self.data.shape[0])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel spacing in mm along I, J, K."""
        return spacing_of(self.affine)

    def with_data(self, data: np.ndarray, name: str | None = None) -> Volume:
        """A new volume on the same grid holding ``data`` ((I, J, K) or (C, I, J, K))."""
        return Volume(data, self.affine.copy(), name or self.name, dict(self.meta))


def spacing_of(affine: np.ndarray) -> np.ndarray:
    """Column norms of the 3x3 part of an IJK->RAS affine: the voxel spacing."""
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def directions_of(affine: np.ndarray) -> np.ndarray:
    """Unit direction columns (3x3) of an IJK->RAS affine."""
    return np.asarray(affine)[:3, :3] / spacing_of(affine)


def ijk_to_ras(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Map (N, 3) voxel indices to (N, 3) RAS millimetres."""
    ijk = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def ras_to_ijk(affine: np.ndarray, ras: np.ndarray) -> np.ndarray:
    """Map (N, 3) RAS millimetres to (N, 3) continuous voxel indices."""
    inv = np.linalg.inv(affine)
    ras = np.atleast_2d(np.asarray(ras, dtype=np.float64))
    return ras @ inv[:3, :3].T + inv[:3, 3]


def same_grid(a: np.ndarray, b: np.ndarray, shape_a, shape_b, atol: float = 1e-4) -> bool:
    """True when two (affine, shape) pairs describe the same voxel grid."""
    return tuple(shape_a) == tuple(shape_b) and np.allclose(a, b, atol=atol)


#: smallest |det| of the unit direction matrix accepted: below it two voxel axes (nearly) coincide
MIN_DIRECTION_DETERMINANT = 1e-6


def check_geometry(affine: np.ndarray, name: str = "volume") -> None:
    """Refuse a degenerate voxel grid: non-finite values, zero spacing or a singular direction matrix.

    Raises:
        InvalidVolumeError: with one line naming the problem and the remedy.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        message = f"{name} has non-finite values in its voxel-to-world matrix; fix the image header and try again"
        raise InvalidVolumeError(message)
    spacing = spacing_of(affine)
    if np.any(spacing <= 1e-9):
        message = (f"{name} has zero voxel spacing ({', '.join(f'{s:g}' for s in spacing)} mm); fix the image "
                   "header's spacing (voxel size) and try again")
        raise InvalidVolumeError(message)
    if abs(float(np.linalg.det(affine[:3, :3] / spacing))) < MIN_DIRECTION_DETERMINANT:
        message = (f"{name} has a singular direction matrix (two voxel axes point the same way); fix the image "
                   "header's orientation and try again")
        raise InvalidVolumeError(message)
