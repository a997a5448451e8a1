"""Intensity normalisation of a card (window, z-score, percentile) and the label-map check.

Semantics follow the MONAI transforms the upstream models were trained with:

* ``window`` = ``ScaleIntensityRange(a_min, a_max, b_min, b_max, clip)``: ``(x - a_min) / (a_max - a_min)``,
  then ``* (b_max - b_min) + b_min``, then clipped to ``[b_min, b_max]`` when ``clip`` (card: ``window``,
  ``range`` (default ``[0, 1]``), ``clip`` (default true)); float32 arithmetic in MONAI's order;
* ``zscore`` = ``NormalizeIntensity(nonzero, channel_wise)``: ``(x - mean) / std`` over the foreground
  (``nonzero``) or all voxels, per channel (``channel_wise``, default true) or over all channels together;
  voxels outside the foreground are 0 (MONAI leaves them as they were: 0 for a clean background);
* ``percentile``: per channel, ``(x - p_lo) / (p_hi - p_lo)`` clipped to [0, 1].

Robustness (issue 10): the foreground of ``nonzero`` does not depend on exact zeros. A voxel is foreground when
``|x|`` exceeds ``max(2**-23 * scale, 5 * noise)``, where ``scale`` is the 99.9th percentile of ``|x|`` and
``noise`` a robust estimate of the background noise (from the near-zero mode of the histogram, when its shape
is that of noise; 0 for a clean zero background, so clean inputs keep MONAI's ``x != 0`` mask). Statistics are
taken after an exact
power-of-two rescaling (:func:`_zscore`), so a global factor between 1e-30 and 1e30 neither overflows nor
underflows and gives the same normalised image.
"""

from __future__ import annotations

import numpy as np

from .quantiles import abs_pieces, chunks, count, percentiles

#: foreground: |x| > max(REL_FLOOR * scale, NOISE_FACTOR * noise sigma); REL_FLOOR is float32's resolution
#: (2**-23): a value that small next to the image's intensities vanishes in ``x - mean`` anyway
REL_FLOOR = 2.0**-23
NOISE_FACTOR = 5.0
#: the near-zero band searched for background noise: it starts at NOISE_BAND of the scale and doubles until it
#: holds NOISE_MIN_SHARE of the voxels (at most NOISE_BAND_MAX of the scale)
NOISE_BAND = 0.01
NOISE_BAND_MAX = 0.16
NOISE_MIN_SHARE = 0.1
#: shape of a noise-magnitude population (Rayleigh: p10/p50 0.39, p90/p50 1.82; half-normal: 0.19, 2.44):
#: it starts at 0 and is not too skewed. Smooth dark image content (blob tails) is far more skewed; a band of
#: dark tissue does not start at 0; a constant near-zero offset is too flat. None of those is noise.
NOISE_LOW_MAX = 0.6
NOISE_HIGH = (1.3, 4.0)
#: median of a Rayleigh magnitude (MR background: Rician noise where there is no signal) = 1.1774 sigma
_RAYLEIGH_MEDIAN = 1.1774
#: label-map check: at most this many distinct values, all integers
LABEL_MAP_MAX_VALUES = 16


def _scale(x: np.ndarray) -> float:
    """Robust magnitude of ``|x|`` (99.9th percentile, else the maximum) of float32 ``x``."""
    found = percentiles(abs_pieces(x), [99.9, 100.0])
    if found is None:
        return 0.0
    return found[0] if found[0] > 0 else found[1]


def foreground(x: np.ndarray) -> np.ndarray:
    """Boolean foreground of one channel (or all channels) that does not depend on exact zeros.

    The statistics are those of the float32 values the z-score normalises, taken in float64 as before but
    without float64 copies of the image (:mod:`.quantiles`: same numbers as ``np.percentile`` on a float64
    copy); every comparison with a threshold is made in float64 (``np.float64`` operands), as it was.
    """
    x = np.asarray(x, dtype=np.float32)
    if not (x.flags.c_contiguous or x.flags.f_contiguous):  # chunks() of x and of the mask must correspond
        x = np.ascontiguousarray(x)
    scale = _scale(x)
    if scale <= 0:
        return np.zeros(x.shape, bool)
    threshold = np.float64(max(REL_FLOOR * scale, NOISE_FACTOR * _noise_sigma(x, scale)))
    mask = np.empty_like(x, dtype=bool)  # the layout of x, so that the pieces correspond
    for piece, out in zip(chunks(x), chunks(mask), strict=True):  # no input-sized |x| temporary
        np.greater(np.abs(piece), threshold, out=out)
    return mask


def _noise_sigma(x: np.ndarray, scale: float) -> float:
    """Sigma of the background noise in ``|x|`` (Rayleigh model), or 0 when the near-zero voxels are no noise."""
    band = np.float64(NOISE_BAND * scale)
    counted: dict = {}

    def within(a):
        return a <= band

    def share_too_small() -> bool:  # each band is counted once (a pass over the whole volume)
        if band not in counted:
            counted[band] = count(x, within)
        return counted[band] < NOISE_MIN_SHARE * x.size

    while share_too_small() and band < NOISE_BAND_MAX * scale:
        band = np.float64(band * 2.0)
    sigma = 0.0
    for _ in range(3):  # refine the band around the noise it finds
        if share_too_small():
            return 0.0
        low, median, high = percentiles(abs_pieces(x, keep=within), [10, 50, 90])
        if not (median > 0 and low / median <= NOISE_LOW_MAX and NOISE_HIGH[0] <= high / median <= NOISE_HIGH[1]):
            return 0.0
        sigma = median / _RAYLEIGH_MEDIAN
        band = np.float64(min(max(band, 3.0 * sigma), NOISE_BAND_MAX * scale))
    return sigma


def _zscore(x: np.ndarray, nonzero: bool, masks: list | None = None) -> np.ndarray:
    """MONAI ``NormalizeIntensity`` on float32 data, bit for bit, but safe from overflow and underflow.

    MONAI takes ``np.mean``/``np.std`` of the float32 values. Here the values are first multiplied by a power
    of two that brings their magnitude near 1: such a scaling is exact in floating point, so the float32
    statistics and ``(x - mean) / std`` are MONAI's on clean data up to float32 rounding (about 1e-5: MONAI 1.6
    computes them in torch, this in numpy), while squares of
    1e30-scaled intensities can no longer overflow (nor those of 1e-30-scaled ones underflow). The arithmetic
    runs in place on the one copy of the foreground values (same operations, same order, same float32
    results), so an input-sized image costs its output, that copy and ``np.std``'s one temporary.
    ``masks``, when given, receives the foreground mask (``nonzero`` only).
    """
    x = np.asarray(x, dtype=np.float32)
    if not (x.flags.c_contiguous or x.flags.f_contiguous):
        x = np.ascontiguousarray(x)
    mask = foreground(x) if nonzero else None  # laid out like x
    if masks is not None and mask is not None:
        masks.append(mask)
    # the foreground values in memory order (views of x and the mask: nibabel volumes are Fortran-ordered, and
    # boolean indexing in index order took 2.8 s instead of 1.2 s on a 512x512x300 CT; the scatter below 0.9 s
    # instead of 0.05 s). The order only changes the float32 rounding of the mean and std.
    flat = x.ravel(order="K")
    values = flat[mask.ravel(order="K")] if nonzero else flat.copy()
    if values.size == 0:
        return np.zeros(x.shape, np.float32)
    top = max(abs(float(values.max())), abs(float(values.min())))
    factor = np.float32(2.0 ** -np.frexp(top)[1]) if top > 0 else np.float32(1.0)
    values *= factor
    mean = np.mean(values)
    std = np.std(values)
    if not std > 0:  # MONAI divides by 1 where std is 0: x - mean, which is 0 on the mask
        std = factor
    values -= mean
    values /= std
    out = np.zeros_like(x)  # x's layout, so that the flat view below is in memory order too
    target = out.ravel(order="K")
    if nonzero:
        target[mask.ravel(order="K")] = values
    else:
        target[...] = values
    return out


def _window(data: np.ndarray, intensity: dict) -> np.ndarray:
    lo, hi = (float(v) for v in intensity["window"])
    b_min, b_max = (float(v) for v in intensity.get("range", (0.0, 1.0)))
    out = np.subtract(data, np.float32(lo), dtype=np.float32)  # one output array, then in place (same order)
    if hi == lo:  # MONAI: warns and only subtracts a_min
        return out
    out /= np.float32(hi - lo)
    out *= np.float32(b_max - b_min)
    out += np.float32(b_min)
    if intensity.get("clip", True):
        np.clip(out, min(b_min, b_max), max(b_min, b_max), out=out)
    return out


def _percentile(x: np.ndarray, percentiles) -> np.ndarray:
    x64 = x.astype(np.float64)
    lo, hi = np.percentile(x64, percentiles)
    if not hi > lo:
        return np.zeros(x.shape, np.float32)
    return np.clip((x64 - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def normalise_intensity(data: np.ndarray, intensity: dict, foregrounds: list | None = None
                        ) -> tuple[np.ndarray, bool]:
    """Apply the card's intensity normalisation to (C, I, J, K) data -> (float32 data, is_constant).

    ``foregrounds``, when given, receives each channel's (I, J, K) foreground mask of a channel-wise ``nonzero``
    z-score (what :func:`..explain.masking.body_mask` would compute again; nothing for other methods).
    """
    data = np.asarray(data, dtype=np.float32)
    # per channel, whatever the layout (reshape(C, -1) copied a Fortran-ordered volume: 2.3 s on a CT)
    constant = all(channel.min() == channel.max() for channel in data)
    method = intensity.get("method", "none")
    if method == "window":
        return _window(data, intensity), constant
    if method == "percentile":
        def per_channel(channel):
            return _percentile(channel, intensity.get("percentiles", (0.5, 99.5)))
    elif method == "zscore":
        nonzero = bool(intensity.get("nonzero", False))
        if not intensity.get("channel_wise", True):
            return _zscore(data, nonzero), constant

        def per_channel(channel):
            return _zscore(channel, nonzero, foregrounds)
    else:
        return data.copy(), constant
    if len(data) == 1:
        return per_channel(data[0])[None], constant
    out = np.empty_like(data)  # several channels: one at a time into the output
    for c in range(len(data)):
        out[c] = per_channel(data[c])
    return out, constant


def label_map_reason(data: np.ndarray) -> str | None:
    """Why ``data`` looks like a label map or mask rather than an image (None if it does not)."""
    data = np.asarray(data)
    step = max(1, data.size // 1_000_000)  # a quick look at a subsample first: most images fail it at once
    for sample in (data.ravel()[::step], data):
        finite = sample[np.isfinite(sample)]
        if finite.size == 0 or not np.all(finite == np.round(finite)):
            return None
        if not 2 <= len(np.unique(finite)) <= LABEL_MAP_MAX_VALUES:  # a constant volume is not a label map
            return None
        if step == 1:
            break
        return None
    values = np.unique(finite)
    if len(values) > LABEL_MAP_MAX_VALUES:
        return None
    shown = ", ".join(f"{v:g}" for v in values[:8]) + (" ..." if len(values) > 8 else "")
    return f"it holds only {len(values)} distinct integer value(s) ({shown}), like a label map or mask"
