"""``hybridseg demo [--out DIR]``: every bundled model on the MNI152 template, with files and pictures."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="segment the bundled MNI152 template with every bundled model; write files and pictures",
        description="Segments the MNI152 T1 template (shipped by nilearn) with every bundled model and writes, flat "
                    "in DIR: ID.seg.nrrd, ID.attention-METHOD.nrrd (natural method, grad-cam, uncertainty), "
                    "ID.json, axial/sagittal/coronal slice pictures and a 3D picture per model rendered offscreen "
                    "by Slicer's displayable managers, montage.png and demo-summary.json.")
    parser.add_argument("--out", default="demo-output", metavar="DIR", help="output folder (default ./demo-output)")
    parser.add_argument("--model", dest="models", action="append", default=None, metavar="ID",
                        help="only this bundled model (repeatable; default: every bundled model)")
    parser.add_argument("--resolution", type=int, choices=[1, 2], default=2,
                        help="template resolution in mm (default 2)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--size", type=int, default=384, metavar="PX", help="picture size in pixels (default 384)")
    parser.add_argument("--no-render", action="store_true", help="only the segmentation files, no pictures")
    parser.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..core.errors import UserInputError
    from ..mrml.demo import run_demo

    if not 64 <= args.size <= 2048:
        message = f"--size {args.size} is out of range; use 64 to 2048 pixels"
        raise UserInputError(message)
    report = run_demo(args.out, args.catalog, models=args.models, resolution=args.resolution, device=args.device,
                      size=args.size, render=not args.no_render,
                      on_model=lambda model: logger.info("segmenting with %s", model))
    out = Path(args.out).resolve()
    print(f"Input:    {report.input_path.resolve()}")
    print(f"Outputs:  {out}/  (*.seg.nrrd, *.attention-*.nrrd, *.json{', *.png' if report.montage else ''})")
    if report.montage:
        print(f"Montage:  {report.montage.resolve()}")
    print(f"Summary:  {out / 'demo-summary.json'}")
    regions = {run.dice_region for run in report.runs if run.dice}
    print()
    print(report.table())
    if regions:
        print(f"(Dice on the {'; '.join(sorted(regions))}; time = segmentation + attention maps)")
    print(f"Total: {report.seconds:.1f} s")
    return 0
