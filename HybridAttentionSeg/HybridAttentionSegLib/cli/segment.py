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
                        help="attention methods (default: the model's natural method, the first one its card "
                             "ships; 'none' for none)")
    parser.add_argument("--class", dest="target_class", default=None,
                        help="segment name for class-dependent maps (default: largest predicted structure among "
                             "the classes the card ships the map for)")
    parser.add_argument("--allow-unfaithful", action="store_true",
                        help="compute maps the model card withholds because they failed the faithfulness test "
                             "(research use; the result JSON still labels them 'not faithful on validation')")
    parser.add_argument("--probabilities", action="store_true", help="also write per-class probabilities")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation for uncertainty")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--force", action="store_true",
                        help="segment an input that looks like a label map or mask (refused by default)")
    parser.set_defaults(func=run)


def case_options(args, methods: list[str]):
    """The per-case options of ``segment`` (also ``segment-batch``'s) from parsed arguments."""
    from ..core.inference.case import CaseOptions

    return CaseOptions(methods=methods, target_class=args.target_class, probabilities=args.probabilities,
                       tta=args.tta, overwrite=getattr(args, "overwrite", False), force=args.force,
                       series=getattr(args, "series", None),
                       allow_unfaithful=getattr(args, "allow_unfaithful", False))


def run(args) -> int:
    from ..core.inference.case import prepare_case, resolve_methods, segment_case
    from ..core.inference.engine import Segmenter
    from ..core.models.cards import get_card
    from .progress import ProgressBar

    card = get_card(args.model, args.catalog)
    options = case_options(args, resolve_methods(card, args.attention))
    outputs, volume = prepare_case(card, args.input, args.out, options)
    with outputs:  # the stem's lock is taken before the weights are loaded; removed on any failure
        with ProgressBar("downloading weights", enabled=not args.no_progress, unit="B") as download_bar:
            segmenter = Segmenter(card, device=args.device, download_progress=download_bar)
        with ProgressBar(f"segmenting ({card.id})", enabled=not args.no_progress) as bar:
            summary, notices = segment_case(segmenter, outputs, volume, options, on_progress=bar)
    for notice in notices:
        print(f"hybridseg: notice: {notice}", file=sys.stderr)
    print(json.dumps({"files": summary["files"], "segments": summary["segments"],
                      "timings": summary["timings"], "device": summary["device"],
                      "fast_path": summary["fast_path"]}, indent=2))
    return 0
