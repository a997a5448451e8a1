"""Model-grid outputs back onto the input grid, lean: no full-size per-class copies, on the outputs' device.

:meth:`~.preprocess.Prepared.to_input_grid` resizes all N probability channels at once and re-orients them in
numpy: N float32 copies of the input size, twice (3 classes at 512x512x300: 0.9 GB each), although most runs
only need the labels. Here the labels are decided **one class at a time** (running maximum for softmax,
threshold painting for sigmoid cards) and **one slab of rows at a time** (``resample_run``: the same numbers
as resizing the whole volume), written through an oriented view straight into the input-grid array: the only
input-sized array is the result (uint8 labels, or the float32 map; on a GPU plus one re-oriented copy).
Everything stays on the tensor's device until the final copy to the CPU (GPU-resident on CUDA).

The labels are the ones ``decide(card, prepared.to_input_grid(probabilities))`` gives: the resize is per channel
either way, and the running maximum with a strict ``>`` keeps the first maximal channel like ``argmax``.
"""

from __future__ import annotations

import numpy as np
import torch

from .preprocess import Prepared, _invert_ornt, orient_tensor
from .quantiles import abs_pieces, chunks, percentiles
from .resample import inverse_steps, resample_run

#: elements of one slab of the inverse (oriented input rows at a time): bounds its temporaries (16 MiB float32)
SLAB_ELEMENTS = 1 << 22


def _slabs(shape, axis: int) -> list[tuple[int, int]]:
    """Runs of rows along oriented ``axis``, each about ``SLAB_ELEMENTS`` voxels."""
    rows = max(1, SLAB_ELEMENTS * int(shape[axis]) // max(1, int(np.prod([int(s) for s in shape]))))
    return [(start, min(start + rows, int(shape[axis]))) for start in range(0, int(shape[axis]), rows)]


def _rows(prepared: Prepared, full: torch.Tensor, grid: _InputGrid, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` along ``grid.axis`` of ``prepared.to_oriented(full[None])[0]`` for an uncropped
    model-grid channel, laid out in memory like ``grid``'s oriented frame."""
    if tuple(full.shape) == tuple(prepared.oriented_shape) and prepared.steps == (1.0, 1.0, 1.0):
        return full.narrow(grid.axis, start, stop - start)
    return resample_run(full[None], prepared.oriented_shape, inverse_steps(prepared.steps), grid.axis, start, stop,
                        grid.layout)[0]


class _InputGrid:
    """The (I, J, K) result on the input grid, written in the oriented frame one slab at a time.

    On the CPU the result is a Fortran-ordered numpy array and the slabs go through its oriented *view* (numpy
    flips and transposes are views; torch's ``flip`` copies), so no oriented copy is made; the slabs run along
    the oriented axis of input axis K, the slowest in memory, so that each slab is one contiguous block (slabs
    along another axis made the writes 1.5x slower on a CT). On a GPU the result is built in the oriented frame
    (slabs along its first axis) and re-oriented at the end (one copy, on the device).
    """

    def __init__(self, prepared: Prepared, dtype: torch.dtype, device: torch.device):
        self.prepared, self.device = prepared, device
        if device.type == "cpu":
            # Fortran order: the layout of NIfTI/NRRD files, of nibabel's volumes and of VTK's (K, J, I) arrays,
            # so writing a map streams its memory as it is (io.py) and the body mask matches it
            self.array = np.empty(prepared.input_shape, dtype=torch.empty((), dtype=dtype).numpy().dtype, order="F")
            view = self.array
            flips = [axis for axis, flip in enumerate(prepared.ornt[:, 1]) if flip == -1]
            if flips:
                view = np.flip(view, flips)
            self.oriented = view.transpose([int(a) for a in np.argsort(prepared.ornt[:, 0])])
            self.axis = int(prepared.ornt[2, 0])  # where input axis K went
            # the oriented axes from slowest to fastest in memory: slabs are computed laid out the same way
            self.layout = tuple(int(a) for a in np.argsort([-abs(s) for s in self.oriented.strides], kind="stable"))
        else:
            self.oriented = torch.empty(prepared.oriented_shape, dtype=dtype, device=device)
            self.axis, self.layout = 0, (0, 1, 2)

    def slabs(self) -> list[tuple[int, int]]:
        """The (start, stop) runs along :attr:`axis` to write."""
        return _slabs(self.prepared.oriented_shape, self.axis)

    def __setitem__(self, rows: slice, slab: torch.Tensor) -> None:
        index = (slice(None),) * self.axis + (rows,)
        if isinstance(self.oriented, np.ndarray):
            self.oriented[index] = slab.numpy()
        else:
            self.oriented[index] = slab

    def result(self) -> np.ndarray:
        if isinstance(self.oriented, np.ndarray):
            return self.array
        # Fortran order like the CPU result: the permuted copy on the device, a transposed view on the CPU
        return unorient(self.prepared, self.oriented).permute(2, 1, 0).contiguous().cpu().numpy().T


def resize(prepared: Prepared, t: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """One (D, H, W) model-grid channel -> the oriented input shape (as ``to_input_grid``; ``fill`` outside a
    foreground crop)."""
    return prepared.to_oriented(t[None], fill)[0]


def unorient(prepared: Prepared, t: torch.Tensor) -> torch.Tensor:
    """Undo the orientation transform on the last three axes (torch views: flips, then a permutation)."""
    return orient_tensor(t, _invert_ornt(prepared.ornt))


def labels_on_input_grid(card, prepared: Prepared, probabilities: torch.Tensor) -> np.ndarray:
    """(N, D, H, W) model-grid probabilities -> (I, J, K) uint8 labels on the input grid, class by class and
    slab by slab (module docstring)."""
    full = prepared.uncrop(probabilities.float())  # 0 outside a crop, as to_oriented
    labels = _InputGrid(prepared, torch.uint8, full.device)
    for start, stop in labels.slabs():
        if card.activation == "sigmoid":
            slab = None
            for region in card.output_regions:
                rows = _rows(prepared, full[region["channel"]], labels, start, stop)
                if slab is None:
                    slab = torch.zeros_like(rows, dtype=torch.uint8)  # the rows' layout
                slab[rows > card.output_threshold] = int(region["label"])
            if slab is None:  # no region: all background
                slab = torch.zeros_like(_rows(prepared, full[0], labels, start, stop), dtype=torch.uint8)
        else:
            best = _rows(prepared, full[0], labels, start, stop).clone()  # clone and zeros_like keep the layout
            slab = torch.zeros_like(best, dtype=torch.uint8)
            for channel in range(1, full.shape[0]):
                up = _rows(prepared, full[channel], labels, start, stop)
                better = up > best
                slab[better] = channel
                torch.where(better, up, best, out=best)
        labels[start:stop] = slab
    return labels.result()


def map_on_input_grid(prepared: Prepared, t: torch.Tensor) -> np.ndarray:
    """One (D, H, W) model-grid map -> float32 (I, J, K) on the input grid, normalised to [0, 1] in place; built
    slab by slab straight into the input-grid array (no oriented copy)."""
    full = prepared.uncrop(t[None].float())[0]
    out = _InputGrid(prepared, torch.float32, full.device)
    for start, stop in out.slabs():
        out[start:stop] = _rows(prepared, full, out, start, stop)
    return normalise_map_inplace(out.result())


def normalise_map_inplace(volume: np.ndarray) -> np.ndarray:
    """Same values as ``engine.normalise_map`` (min-shift, robust max = 99.9th percentile), without copies.

    ``volume`` must be a float32 array the caller owns; it is overwritten and returned.
    """
    if volume.flags.c_contiguous or volume.flags.f_contiguous:  # chunks are views: in place piece by piece
        for piece in chunks(volume):  # (on the whole map, nan_to_num's masks cost 1.2x the map)
            np.nan_to_num(piece, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    else:
        np.nan_to_num(volume, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    volume -= float(volume.min()) if volume.size else 0.0
    np.maximum(volume, 0.0, out=volume)
    # the values are >= 0 here: |v| = v, and np.percentile's copy of the map is not needed (quantiles.py)
    found = percentiles(abs_pieces(volume), [99.9, 100.0]) if volume.size else None
    top = 0.0 if found is None else (found[0] if found[0] > 0 else found[1])
    if top <= 0:
        volume[...] = 0.0
        return volume
    volume /= top
    np.clip(volume, 0.0, 1.0, out=volume)
    return volume
