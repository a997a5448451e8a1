"""Exact percentiles of large float32 arrays without full-size temporaries.

``np.percentile`` copies its input to partition it (and the statistics used to run on a float64 copy of the
image: two 0.6 GB temporaries for a 512x512x300 CT). The values here are exactly those of
``np.percentile(x.astype(np.float64), q)`` (numpy's default ``linear`` method), found by a two-pass radix
selection over the float32 bit patterns in fixed-size chunks: the bit pattern of a non-negative float32, read
as an unsigned integer, orders like its value, so a histogram of the top 16 bits finds the bucket of the k-th
smallest value and a histogram of the low 16 bits inside that bucket finds the value itself. Memory: a few
chunk-sized temporaries and two 65536-bin histograms. Hand-written because neither numpy nor torch offer a
selection that neither copies nor reorders its input (``torch.kthvalue`` / ``quantile`` copy as well).

Tested against ``np.percentile`` on float64 copies (``Testing/pytest/test_intensity.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np

#: elements per chunk (16 MiB of float32)
CHUNK = 1 << 22
_BINS = 1 << 16


def chunks(x: np.ndarray, size: int = CHUNK) -> Iterable[np.ndarray]:
    """Consecutive flat pieces of ``x`` in memory order (views when ``x`` is C- or Fortran-contiguous: volumes
    read through nibabel are Fortran-ordered, and ``reshape(-1)`` would copy them). Two arrays of the same
    shape and layout (``np.empty_like``) give corresponding pieces."""
    flat = x.ravel(order="K")
    for start in range(0, flat.size, size):
        yield flat[start:start + size]


def _histogram(pieces: Callable[[], Iterable[np.ndarray]]) -> np.ndarray:
    """Counts of the high 16 bits."""
    counts = np.zeros(_BINS, np.int64)
    for piece in pieces():
        counts += np.bincount(piece.view(np.uint32) >> 16, minlength=_BINS)
    return counts


def _low_histograms(pieces: Callable[[], Iterable[np.ndarray]], buckets: Sequence[int]) -> dict[int, np.ndarray]:
    """Counts of the low 16 bits inside each high bucket of ``buckets``, all in one pass over the data (a pass
    per bucket made the foreground's statistics cost 6.4 s instead of 4 s on a CT)."""
    counts = {bucket: np.zeros(_BINS, np.int64) for bucket in buckets}
    for piece in pieces():
        bits = piece.view(np.uint32)
        high = bits >> 16
        for bucket, total in counts.items():
            total += np.bincount(bits[high == bucket] & 0xFFFF, minlength=_BINS)
    return counts


def percentiles(pieces: Callable[[], Iterable[np.ndarray]], qs: Sequence[float]) -> list[float] | None:
    """``np.percentile(values.astype(np.float64), qs)`` of the non-negative float32 values that ``pieces()``
    yields (called once per pass over the data), numpy's ``linear`` method, bit for bit; None when it yields
    no value.

    numpy: virtual index ``(n - 1) * (q / 100)``, neighbours ``floor`` and ``floor + 1`` (clipped to the last),
    ``gamma = index - floor``, then ``a + (b - a) * gamma`` or, for ``gamma >= 0.5``, ``b - (b - a) * (1 - gamma)``.
    """
    high = np.cumsum(_histogram(pieces))
    n = int(high[-1])
    if n == 0:
        return None
    plan = []
    for q in qs:
        index = (n - 1) * (float(q) / 100.0)
        below = min(max(math.floor(index), 0), n - 1)
        plan.append((below, min(below + 1, n - 1), index - below))
    ranks = sorted({r for below, above, _ in plan for r in (below, above)})
    buckets = {rank: int(np.searchsorted(high, rank, side="right")) for rank in ranks}
    lows = {b: np.cumsum(counts) for b, counts in _low_histograms(pieces, sorted(set(buckets.values()))).items()}
    values = {}
    for rank in ranks:
        bucket = buckets[rank]
        before = int(high[bucket - 1]) if bucket else 0
        low = int(np.searchsorted(lows[bucket], rank - before, side="right"))
        values[rank] = float(np.array((bucket << 16) | low, np.uint32).view(np.float32))
    out = []
    for below, above, gamma in plan:
        a, b = values[below], values[above]
        diff = b - a
        out.append(b - diff * (1.0 - gamma) if gamma >= 0.5 else a + diff * gamma)
    return out


def abs_pieces(x: np.ndarray, keep: Callable[[np.ndarray], np.ndarray] | None = None):
    """``pieces`` of ``|x|`` for float32 ``x`` (optionally only the values where ``keep(|piece|)`` is True)."""
    def pieces():
        for piece in chunks(x):
            a = np.abs(piece)
            yield a[keep(a)] if keep is not None else a

    return pieces


def count(x: np.ndarray, predicate: Callable[[np.ndarray], np.ndarray]) -> int:
    """Number of elements of float32 ``x`` where ``predicate(|x|)`` holds, chunk by chunk."""
    return sum(int(np.count_nonzero(predicate(np.abs(piece)))) for piece in chunks(x))
