"""Localisation: does the map's energy sit on the target structure?

* **energy share**: sum of the map inside the target (and inside the target dilated by
  ``Protocol.dilation_vox`` voxels) over the sum inside the region; next to it the share a uniform map would
  get (the target's share of the region's voxels), so 0.60 means little when the target fills 55 % of the brain.
* **pointing game** (Zhang et al. 2018), per axial slice: is the map's maximum over the slice's region voxels
  inside the target dilated by one voxel? Hit rate over the slices holding target voxels, next to its chance
  level (mean share of each slice's region voxels inside that dilated target). A slice whose map is flat
  zero counts as a miss.

The target is the reference segmentation when the evaluation data has one (the MNI152 tissue labels), else
the model's own prediction. SE3D (arXiv 2405.14584) found 3D saliency methods localise poorly; these numbers
are reported, not used for the pass/fail verdict (deletion/insertion and randomisation are).
"""

from __future__ import annotations

import numpy as np

from ..masking import dilate


def energy_share(values: np.ndarray, target: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """(share of the map's energy inside ``target``, share a uniform map would get), both within ``region``."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    total = float(values[region].sum())
    inside = target & region
    uniform = float(inside.sum()) / max(int(region.sum()), 1)
    if total <= 0:
        return 0.0, uniform
    return float(values[inside].sum()) / total, uniform


def pointing_game(values: np.ndarray, target: np.ndarray, region: np.ndarray) -> tuple[float, float, int]:
    """(hit rate, chance level, number of slices) over axial slices (last axis) holding target voxels."""
    near = dilate(target, 1) & region
    hits, chance, slices = 0, 0.0, 0
    for k in range(values.shape[2]):
        in_region = region[:, :, k]
        if not (target[:, :, k] & in_region).any():
            continue
        slices += 1
        chance += float(near[:, :, k][in_region].mean())
        slice_values = np.where(in_region, values[:, :, k], -np.inf)
        if float(slice_values.max()) <= 0:
            continue
        i, j = np.unravel_index(int(np.argmax(slice_values)), slice_values.shape)
        hits += bool(near[i, j, k])
    if not slices:
        return 0.0, 0.0, 0
    return hits / slices, chance / slices, slices


def localisation(values: np.ndarray, target: np.ndarray, region: np.ndarray, dilation: int) -> dict:
    """Energy shares (target, dilated target) and pointing game of one map for one target mask."""
    share, share_uniform = energy_share(values, target, region)
    near, near_uniform = energy_share(values, dilate(target, dilation), region)
    hit_rate, chance, slices = pointing_game(values, target, region)
    return {
        "energy_in_target": round(share, 4), "energy_in_target_uniform": round(share_uniform, 4),
        "energy_near_target": round(near, 4), "energy_near_target_uniform": round(near_uniform, 4),
        "pointing_game": round(hit_rate, 4), "pointing_game_chance": round(chance, 4), "pointing_slices": slices,
    }


def mean_localisation(items: list[dict]) -> dict:
    """Mean of several :func:`localisation` results (class-agnostic maps: one per segment)."""
    if len(items) == 1:
        return dict(items[0])
    out = {key: round(float(np.mean([item[key] for item in items])), 4) for key in items[0]
           if key != "pointing_slices"}
    out["pointing_slices"] = int(sum(item["pointing_slices"] for item in items))
    return out
