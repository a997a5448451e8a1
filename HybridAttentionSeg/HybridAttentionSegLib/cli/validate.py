"""``hybridseg validate``: the brain-tissue validation protocol (``Resources/docs/validation.md``) for demo models.

Example (what the bundled cards' metrics come from)::

    hybridseg validate --model mni-tissue-transunet --subjects 20 --threads 1 --write-card

Prints Dice per class with 95 % CIs on held-out synthetic subjects, the template at 2 mm and 1 mm and the
held-out slab, and the worst label agreement across backgrounds; ``--write-card`` stores them in the card.
"""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate", help="validate a grey/white-matter model (held-out synthetic subjects, template, slab)",
        description="Run the validation protocol of Resources/docs/validation.md through the engine: Dice per "
                    "class with bootstrap CIs on held-out synthetic subjects, the MNI152 template at 2 mm and "
                    "1 mm and its held-out slab, and label agreement across zero / near-zero / noisy backgrounds.")
    parser.add_argument("--model", action="append", required=True, metavar="ID",
                        help="model id (repeatable); its labels must be the tissue task's")
    parser.add_argument("--subjects", type=int, default=20, help="held-out synthetic subjects (default 20)")
    parser.add_argument("--agreement-subjects", type=int, default=5,
                        help="subjects also drawn with each background (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--write-card", action="store_true",
                        help="store the numbers in each model's card file (replacing earlier validation metrics)")
    parser.set_defaults(func=run)


def _format(entry: dict) -> str:
    lo, hi = entry["ci"]
    return f"{entry['dice']:.3f} [{lo:.3f}, {hi:.3f}]"


def _table(result: dict, names) -> str:
    lines = [f"{result['model']} ({result['time_s']:.0f} s)"]
    for part, title in (("synthetic", f"held-out synthetic (n={result['synthetic']['subjects']})"),
                        ("template_2mm", "template 2 mm"), ("template_1mm", "template 1 mm"),
                        ("slab_2mm", "held-out slab 2 mm")):
        cells = "  ".join(f"{name} {_format(result[part][name])}" for name in names)
        lines.append(f"  {title:28s} {cells}")
    agreement = ", ".join(f"{kind} {100 * v:.2f} %" for kind, v in result["background"]["worst_agreement"].items())
    lines.append(f"  {'background agreement (worst)':28s} {agreement}")
    return "\n".join(lines)


def _write_card(card, result: dict, where: str) -> None:
    import os

    from ..core.errors import UserInputError
    from ..core.models.cards import ModelCard
    from ..core.training.validation import card_metrics

    path = card.path
    data = json.loads(path.read_text()) if path else None
    if not isinstance(data, dict):
        message = f"--write-card needs a single-card JSON file; {card.id} comes from {path}; drop --write-card"
        raise UserInputError(message)
    fresh = card_metrics(result, where)
    names = {m["name"] for m in fresh}
    data["metrics"] = [m for m in data.get("metrics", []) if m["name"] not in names] + fresh
    ModelCard.from_dict(data, path)  # validate before writing
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def run(args) -> int:
    import datetime

    from ..core.data import mni
    from ..core.errors import UserInputError
    from ..core.models.cards import get_card
    from ..core.training.trainer import _device_name, torch_settings
    from ..core.training.validation import validate_model

    if args.subjects < 1 or not 0 <= args.agreement_subjects <= args.subjects:
        message = "--subjects must be >= 1 and --agreement-subjects between 0 and --subjects; e.g. --subjects 20"
        raise UserInputError(message)
    cards = [get_card(model_id, args.catalog) for model_id in args.model]
    expected = [label["name"] for label in mni.TISSUE_LABELS]
    for card in cards:
        if [label["name"] for label in card.labels] != expected:
            message = (f"model {card.id} does not segment {' and '.join(expected)}; validate only grey/white-matter "
                       "models (e.g. --model mni-tissue-transunet)")
            raise UserInputError(message)
    results = []
    with torch_settings(args.threads):
        import torch

        where = f"{_device_name(torch.device(args.device if args.device != 'auto' else 'cpu'))}, " \
                f"{datetime.date.today().isoformat()}"
        for card in cards:
            result = validate_model(card, device=args.device, subjects=args.subjects,
                                    agreement_subjects=args.agreement_subjects)
            results.append(result)
            if args.write_card:
                _write_card(card, result, where)
            if not args.json:
                print(_table(result, expected), flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0
