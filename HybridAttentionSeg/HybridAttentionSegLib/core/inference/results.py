"""Writing a :class:`~.engine.SegmentationResult` as files (one naming scheme for CLI, worker and demo).

``DIR/STEM.seg.nrrd``, ``DIR/STEM.attention-METHOD.nrrd``, ``DIR/STEM.probabilities.nrrd`` (optional) and
``DIR/STEM.json``. All on the input grid; written all or nothing through :class:`~..outputs.OutputSet`
(staged beside the destination, moved in when complete; existing outputs refused unless ``overwrite``).
"""

from __future__ import annotations

import glob
import json
import platform
from importlib import metadata

import numpy as np

from ..explain.evaluation.card_block import attention_quality
from ..outputs import OutputSet
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
        # measured faithfulness of each map (the card's explanations block; labelled, not hidden)
        "attention_quality": attention_quality(
            card, sorted(result.attention), card.label_name(result.target_class) if result.target_class else None),
        "notices": result.notices,
        "grid": {
            "shape": list(result.labelmap.shape),
            "spacing": [round(float(s), 6) for s in spacing_of(result.affine)],
            "ijk_to_ras": np.round(result.affine, 6).tolist(),
        },
        "files": files or {},
    }


def result_names(stem: str, methods=(), probabilities: bool = False) -> list[str]:
    """File names of one result, in the order they are moved in (the JSON summary last)."""
    names = [f"{stem}.seg.nrrd"] + [f"{stem}.attention-{method}.nrrd" for method in sorted(methods)]
    if probabilities:
        names.append(f"{stem}.probabilities.nrrd")
    return names + [f"{stem}.json"]


def result_outputs(out_dir, stem: str, methods=(), probabilities: bool = False,
                   overwrite: bool = False) -> OutputSet:
    """The :class:`~..outputs.OutputSet` of a result: refuses (or with ``overwrite`` replaces) every earlier
    output of ``stem`` in ``out_dir``, including attention maps of methods not run this time."""
    escaped = glob.escape(stem)
    replaces = [f"{escaped}.seg.nrrd", f"{escaped}.attention-*.nrrd", f"{escaped}.probabilities.nrrd",
                f"{escaped}.json"]
    return OutputSet(out_dir, stem, result_names(stem, methods, probabilities), overwrite=overwrite,
                     replaces=replaces)


def estimate_result_bytes(shape, methods: int, probability_channels: int = 0) -> int:
    """Upper bound of a result's size on disk: uncompressed uint8 labels plus float32 maps, plus 1 MiB."""
    voxels = int(np.prod(shape))
    return voxels * (1 + 4 * methods + 4 * probability_channels) + 2**20


def write_result(result: SegmentationResult, out_dir, stem: str, probabilities: bool = False,
                 overwrite: bool = False, outputs: OutputSet | None = None) -> dict:
    """Write all files of ``result`` into ``out_dir``, all or nothing; returns the summary written as JSON.

    Existing outputs of ``stem`` are refused (:class:`~..errors.UserInputError`) unless ``overwrite``. Pass
    ``outputs`` (from :func:`result_outputs`, already checked and opened before inference) to write through
    it; otherwise one is checked and opened here.
    """
    names = result_names(stem, result.attention, probabilities and result.probabilities is not None)
    if outputs is None:
        outputs = result_outputs(out_dir, stem, result.attention, probabilities, overwrite)
        outputs.check()
    outputs.names = names
    with outputs, outputs.writing():
        folder = outputs.folder
        files = {"segmentation": str(folder / names[0])}
        write_segmentation_nrrd(outputs.path(names[0]), result.labelmap, result.affine, result.card.labels)
        for method, volume in sorted(result.attention.items()):
            name = f"{stem}.attention-{method}.nrrd"
            write_scalar_nrrd(outputs.path(name), volume, result.affine)
            files[f"attention-{method}"] = str(folder / name)
        if f"{stem}.probabilities.nrrd" in names:
            write_scalar_nrrd(outputs.path(f"{stem}.probabilities.nrrd"), result.probabilities, result.affine)
            files["probabilities"] = str(folder / f"{stem}.probabilities.nrrd")
        summary = result_summary(result, files)
        with atomic_path(outputs.path(names[-1])) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
        outputs.commit()
    summary["files"]["summary"] = str(folder / names[-1])
    return summary
