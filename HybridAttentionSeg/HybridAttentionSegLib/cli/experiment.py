"""``hybridseg experiment review``: the review's three experiments as one grid on Ray (issue 15).

Example (minutes on a 2-core CPU; the same command on a cluster with ``--ray-address auto``)::

    hybridseg experiment review --data demo --quick --out review-quick

Writes ``DIR/results.csv`` (one row per variant x seed), ``DIR/summary.csv``, ``DIR/report.md`` with tables,
plots and the machine, and ``DIR/trials/*.json`` (one per finished trial: a rerun skips them).
"""

from __future__ import annotations

import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "experiment", help="run the review's experiments (CNN vs self- vs cross-attention) on Ray",
        description="Experiments of 'Is attention all you need in medical image analysis?' (arXiv 2307.12775).")
    experiments = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    review = experiments.add_parser(
        "review", help="CNN baseline vs 1/2/4 self-attention vs 1/2 cross-attention layers vs SegResNet",
        description="Train every variant with every seed as Ray tasks (local by default), evaluate Dice and HD95 "
                    "with bootstrap CIs, compare each variant with the CNN baseline (paired), and report "
                    "parameters, GFLOPs, training time, latency and peak memory. Resumable: finished trials in "
                    "--out are not rerun.")
    review.add_argument("--data", default="demo", metavar="demo|DATASET_DIR",
                        help="'demo' (synthetic brain subjects split by seed; default) or a Medical Segmentation "
                             "Decathlon folder (dataset.json, imagesTr/, labelsTr/), split 60/20/20 (seeded)")
    review.add_argument("--test-data", metavar="DATASET_DIR",
                        help="also test every trained variant on this MSD folder (same classes; generalisation)")
    review.add_argument("--seeds", type=int, help="training seeds per variant (default 3; --quick 2)")
    review.add_argument("--steps", type=int, help="training steps per trial (default 1000; --quick 120)")
    review.add_argument("--quick", action="store_true",
                        help="tiny volumes, networks and step count: minutes on a CPU (report.md says what)")
    review.add_argument("--out", default="review-experiment", metavar="DIR",
                        help="output folder (new, empty, or a previous run's to resume; default review-experiment)")
    review.add_argument("--ray-address", metavar="auto|HOST:PORT",
                        help="join a running Ray cluster (e.g. after `ray start --head`) instead of a local one")
    review.add_argument("--variants", metavar="LIST",
                        help="comma-separated subset: cnn, self-1, self-2, self-4, cross-1, cross-2, segresnet")
    review.add_argument("--threads-per-trial", dest="threads", type=int, default=1,
                        help="CPU cores (torch threads) per CPU trial (default 1: one trial per core)")
    review.add_argument("--patch", type=int, nargs="+", metavar="N",
                        help="training window = inference window: one or three sizes, multiples of 16 "
                             "(default 64 64 48; --quick 32)")
    review.add_argument("--spacing", type=float, metavar="MM", help="resample MSD cases to isotropic MM voxels")
    review.add_argument("--split-seed", type=int, default=0, help="seed of the MSD train/validation/test split")
    review.add_argument("--demo-cases", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                        help="demo subjects per split (default 32 4 20; --quick 8 2 6)")
    review.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="trial device")
    review.add_argument("--overwrite", action="store_true",
                        help="write into an --out that holds other files, and rerun trials whose results there "
                             "were made with other settings or data")
    review.add_argument("--no-progress", action="store_true", help="no progress bar")
    review.set_defaults(func=run)
    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run(args) -> int:
    from pathlib import Path

    from ..core.errors import UserInputError
    from ..core.experiments.review import ReviewOptions, run_review
    from .progress import ProgressBar

    if args.patch is not None and len(args.patch) not in (1, 3):
        raise UserInputError(f"--patch takes one or three sizes, got {args.patch}; e.g. --patch 32")
    patch = None if args.patch is None else tuple(args.patch * 3 if len(args.patch) == 1 else args.patch)
    argv = ["--data", args.data, *(["--test-data", args.test_data] if args.test_data else []),
            *(["--quick"] if args.quick else []), *(["--seeds", str(args.seeds)] if args.seeds else []),
            *(["--steps", str(args.steps)] if args.steps else []),
            *(["--variants", args.variants] if args.variants else []),
            *(["--patch", *map(str, patch)] if patch else []),
            *(["--spacing", f"{args.spacing:g}"] if args.spacing else []),
            *(["--split-seed", str(args.split_seed)] if args.split_seed else []),
            *(["--demo-cases", *map(str, args.demo_cases)] if args.demo_cases else []),
            *(["--threads-per-trial", str(args.threads)] if args.threads != 1 else []),
            *(["--ray-address", args.ray_address] if args.ray_address else []),
            *(["--overwrite"] if args.overwrite else []), "--out", args.out]
    options = ReviewOptions(out=Path(args.out), data=args.data, test_data=args.test_data, seeds=args.seeds,
                            steps=args.steps, quick=args.quick, ray_address=args.ray_address, variants=args.variants,
                            threads=args.threads, patch=patch, spacing=args.spacing, split_seed=args.split_seed,
                            demo_cases=tuple(args.demo_cases) if args.demo_cases else None, device=args.device,
                            verbose=args.verbose, overwrite=args.overwrite, argv=argv)
    with ProgressBar("review grid", enabled=not args.no_progress, unit="trial") as bar:
        outcome = run_review(options, progress=bar)
    for name in outcome.files:
        print(Path(args.out) / name)
    print(f"{outcome.ran} trial(s) run, {outcome.skipped} already finished, {len(outcome.failed)} failed; "
          f"{outcome.wall_s:.0f} s")
    if outcome.failed:
        print(f"hybridseg: error: trial(s) failed: {', '.join(outcome.failed)}; rerun the same command to retry them",
              file=sys.stderr)
        return 1
    return 0
