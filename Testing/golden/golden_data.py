"""Deterministic golden-test data: seeded weights, synthetic volumes and the sampled voxels.

Used by ``make_golden.py`` inside the old-MONAI virtual environments *and* by the tests, so it depends on
NumPy only and must give bit-identical arrays under NumPy 1.26 and 2.x on any CPU. Hence:

* random numbers come from a counter-based SplitMix64 hash (integer arithmetic, no NumPy ``Generator``
  whose streams may change between releases);
* floating-point work uses only +, -, *, / and sqrt in float64 (IEEE-correctly rounded everywhere; no
  exp/log/sin, whose SIMD implementations differ between NumPy builds) before the final cast.

Every array made here is also recorded by SHA-256 in the golden JSON, and the tests check those digests, so
a platform that computed a different bit would fail loudly instead of comparing against the wrong input.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np

_M64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def stream_id(*parts) -> int:
    """A 32-bit stream number from strings/ints (CRC-32 of their text)."""
    return zlib.crc32("/".join(str(p) for p in parts).encode()) & 0xFFFFFFFF


def uniform(stream: int, n: int) -> np.ndarray:
    """``n`` float64 numbers in [0, 1) for stream ``stream`` (53-bit mantissas)."""
    offset = np.uint64((int(stream) << 40) & _M64)
    counters = np.arange(n, dtype=np.uint64) + offset
    return (_splitmix64(counters) >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def noise(stream: int, n: int) -> np.ndarray:
    """Approximately standard-normal float64 noise: Irwin-Hall sum of 4 uniforms, centred, unit variance."""
    u = uniform(stream, 4 * n).reshape(4, n)
    total = ((u[0] + u[1]) + u[2]) + u[3]  # explicit order: no reduction whose order a NumPy build may pick
    return (total - 2.0) * np.sqrt(3.0)


def sha256(array: np.ndarray) -> str:
    """Digest of an array's dtype, shape and C-order bytes."""
    array = np.ascontiguousarray(array)
    head = f"{array.dtype.str}{tuple(array.shape)}".encode()
    return hashlib.sha256(head + array.tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------- weights
def weight_std(key: str, shape: tuple[int, ...], out_gain: float) -> tuple[float, float]:
    """(mean, std) of the seeded value of float tensor ``key``: fan-in scaled, norms around 1."""
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        if "relative_position_bias_table" in key:
            return 0.0, 0.5
        if "position_embeddings" in key or "cls_token" in key:
            return 0.0, 0.2
        gain = out_gain if key.startswith("out.") else 1.0
        return 0.0, gain / np.sqrt(fan_in)
    if key.endswith("weight"):  # LayerNorm / affine InstanceNorm scales
        return 1.0, 0.1
    return 0.0, 0.05


def seeded_tensor(seed: int, key: str, shape: tuple[int, ...], out_gain: float = 1.0) -> np.ndarray:
    """float32 values of state-dict entry ``key`` (uniform with the mean/std of :func:`weight_std`)."""
    n = int(np.prod(shape)) if shape else 1
    mean, std = weight_std(key, tuple(shape), out_gain)
    u = uniform(stream_id(seed, key), n)
    return (mean + (u * 2.0 - 1.0) * (np.sqrt(3.0) * std)).astype(np.float32).reshape(shape)


# ---------------------------------------------------------------------------------------------------- volumes
def world_grid(shape, affine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RAS mm coordinates (x, y, z) of every voxel centre, float64, each of ``shape``."""
    i, j, k = np.meshgrid(*(np.arange(s, dtype=np.float64) for s in shape), indexing="ij")
    a = np.asarray(affine, dtype=np.float64)
    x = a[0, 0] * i + a[0, 1] * j + a[0, 2] * k + a[0, 3]
    y = a[1, 0] * i + a[1, 1] * j + a[1, 2] * k + a[1, 3]
    z = a[2, 0] * i + a[2, 1] * j + a[2, 2] * k + a[2, 3]
    return x, y, z


def _ellipsoid(x, y, z, centre, radii) -> np.ndarray:
    dx, dy, dz = (x - centre[0]) / radii[0], (y - centre[1]) / radii[1], (z - centre[2]) / radii[2]
    return dx * dx + dy * dy + dz * dz


#: abdomen-like CT phantom in RAS mm: (centre, radii, HU) painted in order; air (-1000) outside the body
_CT_BLOBS = [
    ((0.0, 0.0, 0.0), (78.0, 52.0, 200.0), 30.0),  # body (soft tissue), long in z
    ((0.0, 0.0, 0.0), (72.0, 46.0, 200.0), -90.0),  # subcutaneous fat ring: inner part repainted below
    ((0.0, 0.0, 0.0), (66.0, 40.0, 200.0), 35.0),
    ((-28.0, 6.0, 10.0), (22.0, 16.0, 30.0), 60.0),  # liver-like
    ((30.0, 12.0, 4.0), (12.0, 9.0, 18.0), 45.0),  # spleen-like
    ((18.0, -14.0, -10.0), (7.0, 6.0, 14.0), 150.0),  # kidney-like (enhancing)
    ((-18.0, -14.0, -12.0), (7.0, 6.0, 14.0), 150.0),
    ((2.0, -8.0, 0.0), (4.0, 4.0, 60.0), 220.0),  # aorta-like
    ((0.0, -30.0, 0.0), (8.0, 7.0, 60.0), 700.0),  # spine-like bone
    ((8.0, 14.0, 12.0), (14.0, 8.0, 9.0), -40.0),  # bowel gas / fat pocket
]


def ct_phantom(shape, affine, seed: int = 0) -> np.ndarray:
    """(I, J, K) float32 CT-like volume in HU on the grid ``affine`` (noise sigma 12 HU inside the body)."""
    x, y, z = world_grid(shape, affine)
    hu = np.full(shape, -1000.0)
    for centre, radii, value in _CT_BLOBS:
        hu = np.where(_ellipsoid(x, y, z, centre, radii) <= 1.0, value, hu)
    # a smooth ramp across organs so the image is not piecewise constant (only + - * /)
    body = hu > -500.0
    hu = hu + np.where(body, 0.15 * x - 0.1 * y + 0.05 * z, 0.0)
    hu = hu + np.where(body, 12.0, 3.0) * noise(stream_id("ct", seed), hu.size).reshape(shape)
    return hu.astype(np.float32)


#: brain-tumour-like 4-channel MR phantom (FLAIR, T1ce, T1, T2) in RAS mm
_MR_BLOBS = [
    ((0.0, 0.0, 0.0), (60.0, 70.0, 55.0), (300.0, 420.0, 500.0, 380.0)),  # brain
    ((0.0, 0.0, 0.0), (12.0, 30.0, 18.0), (120.0, 150.0, 160.0, 900.0)),  # ventricles (CSF)
    ((25.0, 15.0, 10.0), (22.0, 20.0, 18.0), (800.0, 430.0, 420.0, 700.0)),  # oedema
    ((25.0, 15.0, 10.0), (12.0, 11.0, 10.0), (650.0, 1000.0, 380.0, 600.0)),  # enhancing rim
    ((25.0, 15.0, 10.0), (7.0, 6.0, 6.0), (400.0, 260.0, 300.0, 820.0)),  # necrotic core
]


def mr_phantom(shape, affine, seed: int = 0) -> np.ndarray:
    """(4, I, J, K) float32 skull-stripped MR-like volume; background exactly 0, tissue >= about 80."""
    x, y, z = world_grid(shape, affine)
    channels = []
    for c in range(4):
        value = np.zeros(shape)
        for centre, radii, levels in _MR_BLOBS:
            value = np.where(_ellipsoid(x, y, z, centre, radii) <= 1.0, levels[c], value)
        brain = value > 0.0
        ramp = 0.8 * x + 0.5 * y - 0.6 * z
        jitter = 25.0 * noise(stream_id("mr", seed, c), value.size).reshape(shape)
        channels.append(np.where(brain, value + ramp + jitter, 0.0))
    return np.stack(channels).astype(np.float32)


def sample_indices(shape, count: int, seed: int = 0) -> np.ndarray:
    """``count`` distinct flat voxel indices of a grid of ``shape`` (sorted), chosen by hash."""
    n = int(np.prod(shape))
    keys = _splitmix64(np.arange(n, dtype=np.uint64) + np.uint64(stream_id("sample", seed) << 8))
    return np.sort(np.argsort(keys, kind="stable")[:count]).astype(np.int64)
