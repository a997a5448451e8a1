"""Writing a :class:`~.engine.SegmentationResult` as files (one naming scheme for CLI, worker and demo).

``DIR/STEM.seg.nrrd``, ``DIR/STEM.attention-METHOD.nrrd``, ``DIR/STEM.probabilities.nrrd`` (optional) and
``DIR/STEM.json``. All on the input grid; every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from .engine import SegmentationResult
from .io import atomic_path, write_scalar_nrrd, write_segmentation_nrrd
from .volume import spacing_of


def versions() -> dict:
    """Versions of the packages that determine a result."""
    out = {"python": platform.python_version()}
    for package in ("hybridattentionseg", "torch", "monai", "numpy", "openvino"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def result_summary(result: SegmentationResult, files: dict[str, str] | None = None) -> dict:
    """JSON-ready summary: model, versions, device, timings, segments, notices, geometry."""
    card = result.card
    return {
        "model": card.id,
        "architecture": card.architecture,
        "versions": versions(),
        "device": result.device,
        "fast_path": result.fast_path,
        "timings": result.timings,
        "target_class": card.label_name(result.target_class) if result.target_class else None,
        "segments": result.segment_stats(),
        "attention_methods": sorted(result.attention),
        "notices": result.notices,
        "grid": {
            "shape": list(result.labelmap.shape),
            "spacing": [round(float(s), 6) for s in spacing_of(result.affine)],
            "ijk_to_ras": np.round(result.affine, 6).tolist(),
        },
        "files": files or {},
    }


def write_result(result: SegmentationResult, out_dir, stem: str, probabilities: bool = False) -> dict:
    """Write all files of ``result`` into ``out_dir``; returns the summary that was written as JSON."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"segmentation": str(write_segmentation_nrrd(out_dir / f"{stem}.seg.nrrd", result.labelmap,
                                                          result.affine, result.card.labels))}
    for method, volume in sorted(result.attention.items()):
        files[f"attention-{method}"] = str(write_scalar_nrrd(out_dir / f"{stem}.attention-{method}.nrrd",
                                                              volume, result.affine))
    if probabilities and result.probabilities is not None:
        files["probabilities"] = str(write_scalar_nrrd(out_dir / f"{stem}.probabilities.nrrd",
                                                       result.probabilities, result.affine))
    summary = result_summary(result, files)
    json_path = out_dir / f"{stem}.json"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    summary["files"]["summary"] = str(json_path)
    return summary
