"""``hybridseg eval-clicks``: Dice against a reference as simulated clicks are added (printed as a table).

Default: the MNI152 2 mm demo data (template, grey/white-matter reference), segmented by a bundled
``mni-tissue-*`` model (or ``--model``); without a bundled model, nilearn's own tissue probability maps stand
in for the model. Synthetic errors (missing chunks, a false blob) are added to the model's output unless
``--no-synthetic-errors``. With ``--seg/--probabilities/--reference`` the given files are evaluated instead.
The protocol is in ``core/click_eval.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval-clicks", help="Dice per simulated click against a reference (demo data by default)",
        description="Simulated user: each click goes to the point deepest inside the largest error region, "
                    "labelled with the reference there; all clicks are replayed with `refine`'s rule.")
    parser.add_argument("input", nargs="?", default=None,
                        help="image (with --seg/--reference); default: the MNI152 template")
    parser.add_argument("--seg", help="segmentation to correct (.seg.nrrd)")
    parser.add_argument("--probabilities", help="its probabilities (.nrrd, channel = label value)")
    parser.add_argument("--reference", help="reference segmentation (.seg.nrrd or a labelmap volume)")
    parser.add_argument("--model", help="demo data: model id to segment the template with "
                                        "(default: the first bundled mni-tissue-* model)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--clicks", type=int, default=10, help="number of simulated clicks (default 10)")
    parser.add_argument("--synthetic-errors", action=argparse.BooleanOptionalAction, default=None,
                        help="add missing chunks and a false blob first (default: on for the demo data)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="random seeds of the synthetic errors; the table shows the mean (default 0-4)")
    parser.add_argument("--radius-mm", type=float, default=20.0, help="largest distance a click reaches (mm)")
    parser.add_argument("--tolerance", type=float, default=2.5, help="click intensity tolerance (robust SDs)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


@dataclass
class Case:
    """What is evaluated: image, starting labelmap, probabilities, reference, segment values and names."""

    title: str
    image: object
    labelmap: object
    probabilities: object
    reference: object
    values: list
    names: dict
    spacing: object


def demo_case(args) -> Case:
    """The MNI152 2 mm template segmented by a bundled model (or nilearn's tissue maps)."""
    import numpy as np

    from ..core.data import mni
    from ..core.models.cards import load_catalog

    volume = mni.load_template(2)
    reference = mni.tissue_labels(2)
    names = {label["value"]: label["name"] for label in mni.TISSUE_LABELS}
    catalog = load_catalog(args.catalog)
    model_id = args.model or next((k for k in sorted(catalog) if k.startswith("mni-tissue") and
                                   catalog[k].bundled), None)
    if model_id is None:
        logger.warning("no bundled mni-tissue model found; nilearn's tissue probability maps stand in for a "
                       "model (pass --model ID to use one)")
        gm, wm = mni.tissue_probabilities(2)
        probabilities = np.stack([np.clip(1.0 - gm - wm, 0.0, 1.0), gm, wm]).astype(np.float32)
        probabilities[:, ~mni.brain_mask(2)] = np.array([1.0, 0.0, 0.0], np.float32)[:, None]
        title = "MNI152 2 mm, nilearn tissue probability maps as the model"
    else:
        from ..core.inference.engine import Segmenter
        from ..core.models.cards import get_card

        card = get_card(model_id, args.catalog)
        result = Segmenter(card, device=args.device).run(volume, keep_probabilities=True)
        probabilities = result.probabilities
        names = {label["value"]: label["name"] for label in card.labels}
        title = f"MNI152 2 mm, model {card.id}"
    labelmap = probabilities.argmax(0).astype(np.uint8)
    return Case(title, volume.data[0], labelmap, probabilities, reference, sorted(names), names,
                volume.spacing)


def file_case(args) -> Case:
    """The given image, segmentation, probabilities and reference."""
    import numpy as np

    from ..core.errors import UserInputError
    from ..core.inference.io import read_segmentation_nrrd, read_volume
    from ..core.inference.volume import same_grid, spacing_of
    from .refine import load_inputs

    if not (args.input and args.seg and args.reference):
        message = "give INPUT, --seg and --reference together (or none of them for the demo data)"
        raise UserInputError(message)
    volume, labelmap, affine, segments, probabilities = load_inputs(args.input, args.seg, args.probabilities)
    if str(args.reference).endswith(".seg.nrrd"):
        reference, reference_affine, _ = read_segmentation_nrrd(args.reference)
    else:
        reference_volume = read_volume(args.reference)
        reference = np.rint(reference_volume.data[0]).astype(np.uint8)
        reference_affine = reference_volume.affine
    if not same_grid(reference_affine, affine, reference.shape, labelmap.shape):
        message = f"reference {args.reference} is not on the segmentation's grid; resample it first"
        raise UserInputError(message)
    names = {s["value"]: s["name"] for s in segments}
    return Case(f"{args.seg} against {args.reference}", volume.data[0], labelmap, probabilities, reference,
                sorted(names), names, spacing_of(affine))


def evaluate(case: Case, args) -> dict:
    """Curves per seed (with or without synthetic errors) and their mean."""
    import numpy as np

    from ..core.correction.click_eval import add_synthetic_errors, click_curve, mean_dice, recovered_fraction

    errors = args.synthetic_errors if args.synthetic_errors is not None else args.seg is None
    clean = mean_dice(case.labelmap, case.reference, case.values)
    runs = []
    for seed in (args.seeds if errors else [None]):
        labelmap, probabilities, regions = case.labelmap, case.probabilities, []
        if errors:
            if probabilities is None:
                from ..core.errors import UserInputError

                message = "synthetic errors need --probabilities; give them or pass --no-synthetic-errors"
                raise UserInputError(message)
            broken = add_synthetic_errors(labelmap, probabilities, case.values, case.spacing, seed=seed)
            labelmap, probabilities, regions = broken.labelmap, broken.probabilities, broken.regions
        curve = click_curve(case.image, labelmap, probabilities, case.reference, case.values, case.spacing,
                            max_clicks=args.clicks, radius_mm=args.radius_mm, tolerance=args.tolerance)
        dice = [p.mean_dice for p in curve]
        runs.append({
            "seed": seed, "errors": regions,
            "curve": [{"clicks": p.clicks, "mean_dice": round(p.mean_dice, 5),
                       "dice": {case.names[v]: round(d, 5) for v, d in p.dice.items()},
                       "click": None if p.click is None else {
                           "ijk": list(p.click.ijk),
                           "label": case.names.get(p.click.value, "background")},
                       "changed": p.changed} for p in curve],
            "recovered_after_5": round(recovered_fraction(curve, clean), 4) if errors else None,
            "monotone": bool(all(b >= a - 1e-12 for a, b in zip(dice, dice[1:], strict=False))),
        })
    length = min(len(r["curve"]) for r in runs)
    mean_curve = [{"clicks": n,
                   "mean_dice": round(float(np.mean([r["curve"][n]["mean_dice"] for r in runs])), 5),
                   "dice": {name: round(float(np.mean([r["curve"][n]["dice"][name] for r in runs])), 5)
                            for name in runs[0]["curve"][n]["dice"]}} for n in range(length)]
    return {"title": case.title, "synthetic_errors": errors, "clean_mean_dice": round(clean, 5),
            "mean_curve": mean_curve, "runs": runs,
            "recovered_after_5": (round(float(np.mean([r["recovered_after_5"] for r in runs])), 4)
                                  if errors else None),
            "monotone": all(r["monotone"] for r in runs)}


def print_table(report: dict) -> None:
    """The curve as a fixed-width table, then one summary line per seed."""
    names = list(report["mean_curve"][0]["dice"])
    print(report["title"])
    print(f"mean Dice without synthetic errors: {report['clean_mean_dice']:.4f}")
    runs = report["runs"]
    if report["synthetic_errors"]:
        print(f"synthetic errors: seeds {[r['seed'] for r in runs]}; "
              + "; ".join(f"{e['kind']} ({e['voxels']} voxels)" for e in runs[0]["errors"]) + " (first seed)")
    header = f"{'clicks':>6}  {'mean Dice':>9}  " + "  ".join(f"{n:>13}" for n in names)
    print(header)
    for point in report["mean_curve"]:
        print(f"{point['clicks']:>6}  {point['mean_dice']:>9.4f}  "
              + "  ".join(f"{point['dice'][n]:>13.4f}" for n in names))
    for run in runs:
        clicks = ", ".join(f"{c['click']['label']}@{tuple(c['click']['ijk'])}" for c in run["curve"][1:6])
        recovered = (f"recovered {100 * run['recovered_after_5']:.0f}% after 5 clicks; "
                     if run["recovered_after_5"] is not None else "")
        print(f"seed {run['seed']}: {recovered}monotone: {'yes' if run['monotone'] else 'NO'}; "
              f"first clicks: {clicks}")
    if report["recovered_after_5"] is not None:
        print(f"mean: {100 * report['recovered_after_5']:.0f}% of the Dice lost to the synthetic errors "
              f"recovered after 5 clicks; no click lowered Dice: {'yes' if report['monotone'] else 'NO'}")


def run(args) -> int:
    from ..core.errors import UserInputError

    if args.clicks < 1:
        message = f"--clicks should be at least 1, got {args.clicks}"
        raise UserInputError(message)
    case = file_case(args) if (args.seg or args.reference or args.input) else demo_case(args)
    report = evaluate(case, args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0
