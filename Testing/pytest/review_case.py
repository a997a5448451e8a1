"""A served folder for the review app tests: the phantom as a `segment`-style case, written by the real writers.

``phantom``: image ``phantom.nrrd``, ``phantom.seg.nrrd`` whose Core has a hole (a ball of :data:`HOLE_MM` at the
centre labelled background: the error a click fixes), ``gates`` (a blob at the centre), ``grad-cam`` (a blob
:data:`GRADCAM_SHIFT_MM` to patient left) and ``uncertainty`` maps, probabilities, and a JSON summary with
faithfulness entries for two of the three maps. ``orphan``: a case whose JSON names an image outside the folder.
Segment colours are green and blue, which the inferno colour map of the attention overlay never produces.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from phantoms import ball, distance_mm, make_phantom

LABELS = [
    {"value": 1, "name": "Shell", "color": [0.15, 0.85, 0.25]},
    {"value": 2, "name": "Core", "color": [0.2, 0.4, 1.0]},
]
HOLE_MM = 5.0
GRADCAM_SHIFT_MM = 14.0
EXPLANATIONS = {
    "gates": {"faithful": True, "deletion_auc": 0.85, "deletion_auc_random": 0.947},
    "grad-cam": {"faithful": False, "deletion_auc": 0.973, "deletion_auc_random": 0.953},
}


def write_review_case(folder) -> dict:
    """Write the cases into ``folder``; returns facts the tests check against (hole voxels, centre...)."""
    from HybridAttentionSegLib.core.inference.io import write_scalar_nrrd, write_segmentation_nrrd

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    phantom = make_phantom()
    shape, spacing = phantom.image.shape, phantom.spacing
    centre = [(n - 1) / 2.0 for n in shape]
    hole = ball(shape, centre, HOLE_MM, spacing) & (phantom.reference == 2)
    labelmap = phantom.reference.copy()
    labelmap[hole] = 0
    gates = np.exp(-(distance_mm(shape, centre, spacing) / 10.0) ** 2).astype(np.float32)
    shifted = [centre[0] + GRADCAM_SHIFT_MM / spacing[0], centre[1], centre[2]]  # +i is +R (patient left)
    gradcam = np.exp(-(distance_mm(shape, shifted, spacing) / 8.0) ** 2).astype(np.float32)
    uncertainty = np.zeros(shape, np.float32)
    uncertainty[ball(shape, centre, HOLE_MM + 1.0, spacing)] = 0.9
    write_scalar_nrrd(folder / "phantom.nrrd", phantom.image, phantom.affine)
    write_segmentation_nrrd(folder / "phantom.seg.nrrd", labelmap, phantom.affine, LABELS)
    for method, data in (("gates", gates), ("grad-cam", gradcam), ("uncertainty", uncertainty)):
        write_scalar_nrrd(folder / f"phantom.attention-{method}.nrrd", data, phantom.affine)
    write_scalar_nrrd(folder / "phantom.probabilities.nrrd", phantom.probabilities, phantom.affine)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    segments = [{"value": label["value"], "name": label["name"], "voxels": int((labelmap == label["value"]).sum()),
                 "volume_ml": round(int((labelmap == label["value"]).sum()) * voxel_ml, 4)} for label in LABELS]
    summary = {"model": "phantom-model", "architecture": "attention_unet", "segments": segments,
               "attention_methods": ["gates", "grad-cam", "uncertainty"], "explanations": EXPLANATIONS,
               "files": {"segmentation": "/elsewhere/phantom.seg.nrrd"}}  # stale absolute paths are ignored
    (folder / "phantom.json").write_text(json.dumps(summary, indent=2))
    write_segmentation_nrrd(folder / "orphan.seg.nrrd", labelmap, phantom.affine, LABELS)
    (folder / "orphan.json").write_text(json.dumps({"model": "phantom-model", "input": "/etc/hostname"}))
    return {"core_voxels": int((labelmap == 2).sum()), "hole_voxels": int(hole.sum()), "affine": phantom.affine,
            "shape": shape}
