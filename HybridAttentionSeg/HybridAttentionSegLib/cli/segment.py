"""``hybridseg segment INPUT --model ID --out DIR``: segmentation + attention maps as files."""

from __future__ import annotations

import json
import logging
import sys

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment", help="segment a volume and write .seg.nrrd, attention maps and a JSON summary",
        description="Reads NIfTI, NRRD, MHA or a DICOM series folder; writes DIR/STEM.seg.nrrd, "
                    "DIR/STEM.attention-METHOD.nrrd per method, DIR/STEM.json (and probabilities). STEM is "
                    "the input's file name without its image extension. Existing outputs are never replaced "
                    "without --overwrite; the files appear together when the run succeeds, or not at all.")
    parser.add_argument("input", help="volume file or DICOM series folder")
    parser.add_argument("--model", required=True, help="model id from `hybridseg models`")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace this input's earlier outputs in --out (default: refuse, listing them)")
    parser.add_argument("--series", metavar="UID", default=None,
                        help="Series Instance UID to read when the DICOM folder holds several series")
    parser.add_argument("--attention", nargs="+", metavar="METHOD", default=None,
                        help="attention methods (default: the model's natural method; 'none' for none)")
    parser.add_argument("--class", dest="target_class", default=None,
                        help="segment name for class-dependent maps (default: largest predicted structure)")
    parser.add_argument("--probabilities", action="store_true", help="also write per-class probabilities")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation for uncertainty")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--force", action="store_true",
                        help="segment an input that looks like a label map or mask (refused by default)")
    parser.set_defaults(func=run)


def resolve_methods(card, requested: list[str] | None) -> list[str]:
    """``None`` -> the natural method; ``["none"]`` -> no maps."""
    if requested is None:
        return [card.spec.natural_method]
    if requested == ["none"]:
        return []
    return requested


def run(args) -> int:
    from pathlib import Path

    from ..core.errors import UserInputError
    from ..core.inference.engine import Segmenter
    from ..core.inference.intensity import label_map_reason
    from ..core.inference.io import read_volume, stem_of
    from ..core.inference.preprocess import check_volume
    from ..core.inference.results import estimate_result_bytes, result_outputs, write_result
    from ..core.models.cards import get_card
    from ..core.models.registry import check_method
    from .progress import ProgressBar

    card = get_card(args.model, args.catalog)
    methods = resolve_methods(card, args.attention)
    for method in methods:
        check_method(card.spec, method)
    if args.series and not Path(args.input).is_dir():
        raise UserInputError(f"--series applies to a DICOM folder; {args.input} is not a folder (drop --series)")
    # every output problem (existing files, --out a file, not writable, no space) is found before inference
    outputs = result_outputs(args.out, stem_of(args.input), methods, args.probabilities, args.overwrite)
    outputs.check()
    volume = read_volume(args.input, series=args.series)
    check_volume(volume, card.in_channels)  # fail fast, before any weights are loaded
    reason = None if args.force else label_map_reason(volume.data)
    if reason:
        raise UserInputError(f"{args.input} does not look like an image: {reason}; pass the scan itself, or "
                             f"--force to segment it anyway")
    if args.target_class is not None:
        card.label_index(args.target_class)
    outputs.check_space(estimate_result_bytes(volume.shape, len(methods) + int(args.tta),
                                              card.out_channels if args.probabilities else 0))
    with outputs:  # staging folder beside the results = the lock of this stem; removed on any failure
        with ProgressBar("downloading weights", enabled=not args.no_progress, unit="B") as download_bar:
            segmenter = Segmenter(card, device=args.device, download_progress=download_bar)
        with ProgressBar(f"segmenting ({card.id})", enabled=not args.no_progress) as bar:
            result = segmenter.run(volume, attention=methods, target_class=args.target_class, tta=args.tta,
                                   keep_probabilities=args.probabilities, on_progress=bar)
        for notice in result.notices:
            print(f"hybridseg: notice: {notice}", file=sys.stderr)
        summary = write_result(result, args.out, outputs.key, probabilities=args.probabilities, outputs=outputs)
    print(json.dumps({"files": summary["files"], "segments": summary["segments"],
                      "timings": summary["timings"], "device": summary["device"],
                      "fast_path": summary["fast_path"]}, indent=2))
    return 0
