"""``hybridseg explain-eval --model ID [INPUT]``: measured faithfulness and sanity of a model's maps.

Writes ``DIR/MODEL.explain-eval.json`` (everything), ``.md`` (the table) and ``.png`` (curves, randomisation).
``--write-card`` also runs the quick protocol and replaces the card's ``explanations`` block (bundled cards
only, evaluated on the default held-out data); ``--all-bundled`` does that for every bundled model, which is
what to run after retraining a demo model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain-eval", help="measure how faithful a model's attention maps are (deletion/insertion, sanity)",
        description="Deletion/insertion curves against random rankings, localisation and cascading "
                    "parameter randomisation for each attention method of a model. Default data: the held-out "
                    "slab of the MNI152 template (bundled demo models). CPU, headless.")
    parser.add_argument("input", nargs="?", help="volume to evaluate on (default: MNI152 held-out slab)")
    parser.add_argument("--model", help="model id from `hybridseg models`")
    parser.add_argument("--all-bundled", action="store_true",
                        help="every bundled model (implies --write-card); regenerates every card's block")
    parser.add_argument("--class", dest="target_class", action="append", default=None, metavar="NAME",
                        help="class for class-dependent maps (repeatable; default: every segment present)")
    parser.add_argument("--methods", nargs="+", metavar="METHOD",
                        help="methods to evaluate (default: every explanation method of the architecture)")
    parser.add_argument("--out", default="explain-eval", help="output folder (default: ./explain-eval)")
    parser.add_argument("--quick", action="store_true", help="quick protocol (one window; for tests)")
    parser.add_argument("--write-card", action="store_true",
                        help="write the scores into the model card (full + quick protocol, default data)")
    parser.add_argument("--data-randomisation", type=int, default=None, metavar="STEPS",
                        help="data (label) randomisation check: train two copies STEPS steps each, true vs "
                             "permuted labels, and compare their maps (default: 100 in the full protocol, 0 = "
                             "off in --quick; demo-task models only; minutes on a CPU)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.set_defaults(func=run)


def _check(args, card) -> None:
    from ..core.errors import UserInputError
    from ..core.explain.evaluation import explanation_methods
    from ..core.models.registry import check_method

    for method in args.methods or []:
        check_method(card.spec, method)
        if method not in explanation_methods(card):
            raise UserInputError(f"{method!r} is not an explanation of a decision and is not scored; "
                                 f"choose from {explanation_methods(card)}")
    for name in args.target_class or []:
        card.label_index(name)
    if args.write_card and (args.input or args.methods or args.target_class or args.quick
                            or args.data_randomisation is not None):
        raise UserInputError("--write-card evaluates the default data, methods and classes with both protocols; "
                             "drop INPUT, --methods, --class, --quick and --data-randomisation")
    if args.data_randomisation is not None and args.data_randomisation < 0:
        raise UserInputError(f"--data-randomisation {args.data_randomisation}: give a number of training steps "
                             "(0 = off)")
    if args.write_card and (card.path is None or not card.bundled):
        raise UserInputError(f"--write-card needs a bundled model with its own card file; {card.id} is not bundled")


def _evaluate_one(args, card, volume) -> dict:
    from ..core.explain.evaluation import FULL, QUICK, evaluate_card
    from ..core.explain.evaluation.card_block import build_block, write_block
    from ..core.explain.evaluation.report import markdown_table, write_report

    classes = [card.label_index(name) for name in args.target_class] if args.target_class else None
    protocol = QUICK if args.quick else FULL
    if args.data_randomisation is not None:
        protocol = dataclasses.replace(protocol, data_randomisation_steps=args.data_randomisation)
    report = evaluate_card(card, volume=volume, methods=args.methods, classes=classes, protocol=protocol)
    files = write_report(report, args.out)
    print(markdown_table(report))
    print(f"timings: {report['wall_time_s']} s wall, {report['forwards']} forward passes "
          f"({json.dumps(report['timings'])})")
    if args.write_card:
        quick = evaluate_card(card, protocol=QUICK)
        path = write_block(card.path, build_block(report, quick))
        files["card"] = str(path)
        print(f"quick protocol: {quick['wall_time_s']} s wall")
    print(json.dumps({"model": card.id, "files": files}, indent=2))
    return report


def run(args) -> int:
    import torch

    from ..core.errors import UserInputError
    from ..core.models.cards import get_card, load_catalog

    torch.set_num_threads(max(1, args.threads))
    if args.all_bundled:
        if args.model or args.input:
            raise UserInputError("--all-bundled evaluates every bundled model on the default data; drop "
                                 "--model and INPUT")
        args.write_card = True
        cards = [card for card in load_catalog(args.catalog).values() if card.bundled]
    elif args.model:
        cards = [get_card(args.model, args.catalog)]
    else:
        raise UserInputError("name a model with --model ID (see `hybridseg models`) or pass --all-bundled")
    volume = None
    if args.input:
        from ..core.inference.io import read_volume
        from ..core.inference.preprocess import check_volume

        volume = read_volume(args.input)
        check_volume(volume, cards[0].in_channels)
    for card in cards:
        _check(args, card)
    failed = []
    for card in cards:
        report = _evaluate_one(args, card, volume)
        failed += [f"{card.id}: {item['method']}" + (f" ({item['class']})" if item["class"] else "")
                   for item in report["methods"] if not item["faithful"]]
    if failed:
        print("not faithful on this data (labelled as such): " + "; ".join(failed), file=sys.stderr)
    return 0
