"""``hybridseg segment-batch INPUT_DIR_OR_LIST --model ID --out DIR``: cohort inference on Ray.

Each case gets exactly the files ``hybridseg segment`` writes (``STEM.seg.nrrd``, ``STEM.attention-METHOD.nrrd``,
``STEM.json``...), through the same code path; ``DIR/summary.csv`` lists every case. Exit codes: 0 every case
done or already done, 1 some cases failed (the others are done; ``summary.csv`` says which and why), 2 bad
input or usage, 130 interrupted (Ctrl-C: the cases in flight leave nothing behind; run again to resume).
"""

from __future__ import annotations

import json
import logging
import os
import sys

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment-batch", help="segment a cohort (folder or list of volumes) on Ray, resumable",
        description="Segments every volume of INPUT (a folder: its image files and DICOM sub-folders; or a text "
                    "file with one path per line) with one resident model per Ray worker (one per GPU, else one "
                    "per CPU core). Writes what `hybridseg segment` writes for each case, one stem per case, and "
                    "DIR/summary.csv (case, status, seconds, volumes in mL). Cases whose outputs are complete "
                    "are skipped, so an interrupted batch resumes. Exit code 0: all cases done; 1: some failed "
                    "(listed in summary.csv); 2: bad input or usage; 130: interrupted.")
    parser.add_argument("input", metavar="INPUT_DIR_OR_LIST", help="folder of volumes, or a text file of paths")
    parser.add_argument("--model", required=True, help="model id from `hybridseg models`")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--attention", nargs="+", metavar="METHOD", default=None,
                        help="attention methods (default: the model's natural method; 'none' for none)")
    parser.add_argument("--class", dest="target_class", default=None,
                        help="segment name for class-dependent maps (default: largest predicted structure)")
    parser.add_argument("--allow-unfaithful", action="store_true",
                        help="compute maps the model card withholds because they failed the faithfulness test "
                             "(research use; each case's JSON still labels them 'not faithful on validation')")
    parser.add_argument("--probabilities", action="store_true", help="also write per-class probabilities")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation for uncertainty")
    parser.add_argument("--force", action="store_true",
                        help="segment inputs that look like label maps or masks (refused by default)")
    parser.add_argument("--overwrite", action="store_true",
                        help="segment every case again, replacing earlier outputs (default: skip finished cases "
                             "and report cases with other outputs in the way)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: one worker per GPU when the Ray cluster has GPUs, else CPU workers")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="at most N workers (default: one per GPU, or one per CPU core, at most one per case)")
    parser.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                        help="a running Ray cluster (default: start a local one; RAY_ADDRESS is honoured). Every "
                             "node must see INPUT and --out at the same paths and have hybridseg installed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..core.batch.cohort import discover_cases, earlier_result
    from ..core.batch.runner import run_batch
    from ..core.batch.summary import check_replaceable, row, write_summary
    from ..core.batch.worker import BatchJob
    from ..core.errors import UserInputError
    from ..core.inference.case import resolve_methods
    from ..core.models.cards import get_card
    from ..core.models.offers import check_request
    from ..core.outputs import OutputSet
    from ..core.weights import resolve_weights_file
    from .progress import ProgressBar
    from .segment import case_options

    if args.workers is not None and args.workers < 1:
        raise UserInputError(f"--workers {args.workers}: give at least 1 (or leave it out)")
    card = get_card(args.model, args.catalog)
    options = case_options(args, resolve_methods(card, args.attention))
    target = card.label_name(card.label_index(options.target_class)) if options.target_class is not None else None
    # a withheld map would fail every case: refused once, before Ray starts (core/models/offers.py)
    check_request(card, options.methods, target, options.allow_unfaithful)
    out = os.path.abspath(os.path.expanduser(args.out))
    OutputSet(out, "summary", []).check()  # --out is a folder (or can become one) and writable
    check_replaceable(out)
    cases = discover_cases(args.input)

    rows, todo = {}, []
    for case in cases:
        state, found = ("none", None) if options.overwrite else earlier_result(out, case, card.id, options)
        if state == "finished":
            rows[case.stem] = row(case, "skipped", segments=found["segments"])
        elif state == "other":
            rows[case.stem] = row(case, "failed", reason=f"{found['reason']} in {out}; delete them, pass "
                                                         "--overwrite or choose another --out")
        else:
            todo.append(case)
    if todo:  # downloaded (hash-checked) once here, not by every worker at once
        with ProgressBar("downloading weights", enabled=not args.no_progress, unit="B") as download_bar:
            resolve_weights_file(card, download=True, progress=download_bar)
    logger.info("%d case(s): %d to segment, %d already done, %d in the way", len(cases), len(todo),
                sum(r["status"] == "skipped" for r in rows.values()),
                sum(r["status"] == "failed" for r in rows.values()))

    job = BatchJob(model_id=card.id, out_dir=out, options=options, device=args.device,
                   catalog=[os.path.abspath(path) for path in args.catalog])
    with ProgressBar(f"segment-batch ({card.id})", enabled=not args.no_progress, unit="case") as bar:
        bar(len(rows), len(cases))

        def on_result(case, answer):
            rows[case.stem] = row(case, answer["status"], answer["seconds"], answer["reason"], answer["segments"])
            bar(len(rows), len(cases))

        run_batch(todo, job, address=args.ray_address, workers=args.workers, on_result=on_result,
                  verbose=args.verbose)
    ordered = [rows[case.stem] for case in cases]
    path = write_summary(out, ordered, [label["name"] for label in card.labels])
    failed = [r for r in ordered if r["status"] == "failed"]
    for failure in failed:
        print(f"hybridseg: case {failure['case']} failed: {failure['reason']}", file=sys.stderr)
    counts = {status: sum(r["status"] == status for r in ordered) for status in ("done", "skipped", "failed")}
    print(json.dumps({"summary": str(path), "cases": len(ordered), **counts,
                      "failed_cases": [{"case": r["case"], "input": r["input"], "reason": r["reason"]}
                                       for r in failed]}, indent=2))
    return 1 if failed else 0
