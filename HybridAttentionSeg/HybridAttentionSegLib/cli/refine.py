"""``hybridseg refine INPUT --seg SEG.seg.nrrd --probabilities PROB.nrrd --click R,A,S,LABEL ... --out OUT``.

Headless correction of a segmentation: optional per-segment thresholds on the probability map, then clicks
(RAS millimetres; LABEL is a segment name, segment ID, label value or ``background``), replayed in the order
given (pass all clicks so far each time). The output is on the segmentation's grid with the same segment
names, colours, label values and terminology (``.seg.nrrd``), or as a NIfTI labelmap (``.nii``/``.nii.gz``).
``--out`` is never one of the inputs and an existing file is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import json
import logging

logger = logging.getLogger(__name__)

BACKGROUND_NAMES = ("background", "bg", "0")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "refine", help="correct a segmentation with clicks and thresholds (writes a new .seg.nrrd)",
        description="Applies per-segment probability thresholds (--threshold), then clicks (--click, "
                    "replayed in order; each changes one connected region within --radius-mm of it), and "
                    "writes the corrected segmentation on the same grid, keeping segment names, colours and "
                    "values.")
    parser.add_argument("input", help="the image the segmentation was made from (file or DICOM folder)")
    parser.add_argument("--seg", required=True,
                        help="segmentation to correct (.seg.nrrd from `hybridseg segment`)")
    parser.add_argument("--probabilities", default=None,
                        help="per-class probabilities (STEM.probabilities.nrrd from `segment "
                             "--probabilities`); needed for --threshold, recommended for clicks")
    parser.add_argument("--click", action="append", default=[], metavar="R,A,S,LABEL",
                        help="a click at RAS mm: LABEL is a segment name, ID or value, or 'background'; "
                             "repeatable; negative coordinates need no '=' (--click -12,4,30,Liver)")
    parser.add_argument("--threshold", action="append", default=[], metavar="SEGMENT=T",
                        help="re-derive SEGMENT as probability >= T (applied before the clicks); repeatable")
    parser.add_argument("--out", required=True,
                        help="output file: .seg.nrrd (Slicer segmentation, names and colours kept) or "
                             ".nii / .nii.gz (NIfTI labelmap); never one of the inputs")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--radius-mm", type=float, default=20.0, help="largest distance a click reaches (mm)")
    parser.add_argument("--tolerance", type=float, default=2.5,
                        help="intensity tolerance of a click, in robust standard deviations of the class")
    parser.set_defaults(func=run)


def resolve_label(text: str, segments: list[dict]) -> int:
    """Label value for a click's LABEL: ``background``, a segment name or ID (case-insensitive) or a value."""
    from ..core.names import unknown_name_error

    key = text.strip().lower()
    if key in BACKGROUND_NAMES:
        return 0
    for segment in segments:
        if key in (segment["name"].lower(), str(segment["id"]).lower(), str(segment["value"])):
            return int(segment["value"])
    raise unknown_name_error("click label", text.strip(), ["background"] + [s["name"] for s in segments])


def parse_click(text: str, segments: list[dict]) -> tuple[tuple[float, float, float], int]:
    """``"R,A,S,LABEL"`` -> ((r, a, s), label value)."""
    from ..core.errors import UserInputError

    parts = text.split(",", 3)
    try:
        if len(parts) != 4:
            raise ValueError(text)
        ras = tuple(float(p) for p in parts[:3])
    except ValueError as err:
        message = f"--click {text!r} should be R,A,S,LABEL (RAS millimetres and a segment name or background)"
        raise UserInputError(message) from err
    return ras, resolve_label(parts[3], segments)


def parse_threshold(text: str, segments: list[dict]) -> tuple[int, float]:
    """``"SEGMENT=T"`` -> (label value, threshold in [0, 1])."""
    from ..core.errors import UserInputError

    name, _, value = text.rpartition("=")
    try:
        threshold = float(value)
        if not name or not 0.0 <= threshold <= 1.0:
            raise ValueError(text)
    except ValueError as err:
        message = f"--threshold {text!r} should be SEGMENT=T with T between 0 and 1 (e.g. 'Gray matter=0.4')"
        raise UserInputError(message) from err
    label = resolve_label(name, segments)
    if label == 0:
        message = f"--threshold {text!r} names the background; threshold a segment instead"
        raise UserInputError(message)
    return label, threshold


def load_inputs(image_path, seg_path, probabilities_path):
    """Read the image, segmentation and probabilities and check that they share one grid."""
    from ..core.errors import UserInputError
    from ..core.inference.io import read_segmentation_nrrd, read_volume
    from ..core.inference.volume import same_grid

    volume = read_volume(image_path)
    labelmap, affine, segments = read_segmentation_nrrd(seg_path)
    if not same_grid(volume.affine, affine, volume.shape, labelmap.shape):
        message = (f"segmentation {seg_path} is not on the grid of {image_path} (shape {labelmap.shape} vs "
                   f"{volume.shape}); give the image the segmentation was made from")
        raise UserInputError(message)
    probabilities = None
    if probabilities_path:
        probability_volume = read_volume(probabilities_path)
        if not same_grid(probability_volume.affine, affine, probability_volume.shape, labelmap.shape):
            message = (f"probabilities {probabilities_path} are not on the segmentation's grid; give the "
                       "probabilities written together with this segmentation")
            raise UserInputError(message)
        probabilities = probability_volume.data
    if volume.channels > 1:
        logger.info("the image has %d channels; clicks use the first", volume.channels)
    return volume, labelmap, affine, segments, probabilities


#: output extensions -> format written
OUT_FORMATS = {".seg.nrrd": "seg.nrrd", ".nii.gz": "nifti", ".nii": "nifti"}


def check_numbers(args) -> None:
    """``--radius-mm`` and ``--tolerance`` must be positive, finite numbers."""
    import math

    from ..core.errors import UserInputError

    for option, value in (("--radius-mm", args.radius_mm), ("--tolerance", args.tolerance)):
        if not math.isfinite(value) or value <= 0:
            message = f"{option} must be a positive number, got {value:g}; e.g. {option} 20"
            raise UserInputError(message)


def check_out(out: str, inputs: list[str | None]):
    """Where and in which format ``--out`` is written -> (path, format); refuses folders and inputs."""
    import os
    from pathlib import Path

    from ..core.errors import UserInputError

    if not out.strip():
        raise UserInputError("--out is empty; give an output file such as corrected.seg.nrrd")
    path = Path(out).expanduser()
    if path.is_dir() or out.endswith(("/", os.sep)):
        message = (f"--out {out} is a folder; give a file name in it ending in .seg.nrrd or .nii.gz "
                   f"(e.g. {path / 'corrected.seg.nrrd'})")
        raise UserInputError(message)
    for given in filter(None, inputs):
        same = path.resolve() == Path(given).expanduser().resolve()
        if same or (path.exists() and Path(given).exists() and os.path.samefile(path, given)):
            message = f"--out {out} is one of the inputs ({given}); write the result to a new file"
            raise UserInputError(message)
    fmt = next((f for ext, f in OUT_FORMATS.items() if path.name.lower().endswith(ext)), None)
    if fmt is None or path.name.lower() in OUT_FORMATS:
        message = (f"--out {out} names no output format; end it in .seg.nrrd (Slicer segmentation) or .nii / "
                   ".nii.gz (NIfTI labelmap)")
        raise UserInputError(message)
    return path, fmt


def run(args) -> int:
    import numpy as np

    from ..core.correction.refine import apply_clicks, click_from_ras, threshold_segment
    from ..core.errors import UserInputError
    from ..core.inference.io import write_labelmap_nifti, write_segmentation_nrrd
    from ..core.inference.volume import spacing_of
    from ..core.outputs import OutputSet

    check_numbers(args)
    out_path, out_format = check_out(args.out, [args.input, args.seg, args.probabilities])
    outputs = OutputSet(out_path.parent, out_path.name, [out_path.name], overwrite=args.overwrite,
                        remedy="pass --overwrite to replace it or choose another --out")
    outputs.check()  # before any work: an existing or unwritable --out is refused now
    volume, labelmap, affine, segments, probabilities = load_inputs(args.input, args.seg, args.probabilities)
    thresholds = [parse_threshold(t, segments) for t in args.threshold]
    parsed = [parse_click(c, segments) for c in args.click]
    clicks = [click_from_ras(affine, ras, value, labelmap.shape) for ras, value in parsed]
    if thresholds and probabilities is None:
        message = "--threshold needs --probabilities (write them with `hybridseg segment --probabilities`)"
        raise UserInputError(message)
    for value, threshold in thresholds:
        labelmap = threshold_segment(labelmap, probabilities, value, threshold)
    report: list[dict] = []
    labelmap = apply_clicks(volume.data[0], labelmap, probabilities, clicks, spacing_of(affine),
                            radius_mm=args.radius_mm, tolerance=args.tolerance, report=report)
    with outputs, outputs.writing():
        if out_format == "nifti":
            write_labelmap_nifti(outputs.path(out_path.name), labelmap, affine)
        else:
            write_segmentation_nrrd(outputs.path(out_path.name), labelmap, affine, segments)  # ids, tags kept
        out = outputs.commit()[out_path.name]
    names = {s["value"]: s["name"] for s in segments}
    counts = np.bincount(labelmap.ravel(), minlength=256)
    for entry, (ras, _) in zip(report, parsed, strict=False):
        entry["ras"] = list(ras)
        entry["label"] = names.get(entry["value"], "background")
    print(json.dumps({
        "segmentation": str(out),
        "thresholds": [{"segment": names[v], "threshold": t} for v, t in thresholds],
        "clicks": report,
        "segments": [{"name": s["name"], "value": s["value"], "voxels": int(counts[s["value"]])}
                     for s in segments],
    }, indent=2))
    return 0
